"""`simulate` continues the population `init` stored (Azurite + SQLite): the same customers
and terminals, time running on to the command's clock, decisions compared with the truth
and with the model's holdout."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

import shared.cli as cli_module
from shared.cli import main as cli
from shared.features import NIGHT_LAST_HOUR
from shared.operations import POPULATION_BLOB, SimulationRecord
from shared.storage.schema import labels, transactions

ROOT = Path(__file__).resolve().parents[2]
HISTORY = "30000"  # init's default is 60,000: half keeps the test short and the model still useful


@pytest.fixture(autouse=True)
def no_local_settings(tmp_path, monkeypatch):
    """CLI calls read no developer's local.settings.json."""
    empty = tmp_path / "empty.settings.json"
    empty.write_text('{"Values": {}}')
    monkeypatch.setenv("LOCAL_SETTINGS_FILE", str(empty))


@pytest.fixture
def clock(monkeypatch):
    """The clock of init and simulate, at a fixed hour of a past day (so the days simulated,
    relative to init's, are the same whenever the test runs)."""
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    now = {"at": midnight - timedelta(days=10) + timedelta(hours=6)}
    monkeypatch.setattr(cli_module, "_now", lambda: now["at"])
    return now


def run(capsys, *args: str) -> dict:
    capsys.readouterr()  # what the test printed before is not the command's answer
    assert cli(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def stored(wiring) -> pd.DataFrame:
    query = sa.select(transactions.c.transaction_id, transactions.c.timestamp, transactions.c.customer_id,
                      transactions.c.terminal_id, transactions.c.fraud_probability, labels.c.is_fraud,
                      labels.c.source).select_from(transactions.outerjoin(
                          labels, labels.c.transaction_id == transactions.c.transaction_id))
    with wiring.engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all())
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame.sort_values(["timestamp", "transaction_id"], ignore_index=True)


def seven_day_counts(frame: pd.DataFrame, which: pd.Series) -> np.ndarray:
    """For the rows ``which`` selects: the customer's stored transactions in the 7 days before."""
    counts = []
    for _, rows in frame.groupby("customer_id"):
        times = rows["timestamp"].dt.tz_convert(None).to_numpy()
        chosen = which.loc[rows.index].to_numpy()
        counts.extend(np.searchsorted(times, times[chosen], side="left")
                      - np.searchsorted(times, times[chosen] - np.timedelta64(7, "D"), side="left"))
    return np.asarray(counts)


def night_share(timestamps: pd.Series) -> float:
    return float((timestamps.dt.hour <= NIGHT_LAST_HOUR).mean())


def test_simulate_continues_the_population_init_stored(app_env, clock, capsys):
    assert cli(["init", "--history", HISTORY]) == 0
    capsys.readouterr()
    record = SimulationRecord.from_json(app_env.store.container.download_blob(POPULATION_BLOB).readall())
    history = stored(app_env)
    assert len(history) == int(HISTORY)
    history_end = history["timestamp"].max()
    assert record.through == history_end.to_pydatetime()
    assert history_end < pd.Timestamp(clock["at"]) - pd.Timedelta(days=1)  # init's history stops short of now

    # Everything the population did in the last day predict accepts (--count above it).
    first = run(capsys, "simulate", "--count", "100000")
    after = stored(app_env)
    live = after[after["fraud_probability"].notna()]
    gap = after[after["fraud_probability"].isna() & (after["timestamp"] > history_end)]
    print(json.dumps(first))  # shown if the test fails
    assert first["sent"] == len(live) > 200 and first["failed"] == 0 and first["degraded"] == 0
    assert "notes" in first  # fewer than asked: that is all there is
    window_start = pd.Timestamp(clock["at"]) - pd.Timedelta(hours=24)
    assert live["timestamp"].min() >= window_start and live["timestamp"].max() < pd.Timestamp(clock["at"])
    # The gap between the history and the batch is imported, labels only where due (7 days).
    assert first["history_imported"]["transactions"] == len(gap) > 0
    assert gap["timestamp"].min() >= history_end and gap["timestamp"].max() < live["timestamp"].min()
    due = gap["timestamp"] < pd.Timestamp(clock["at"]) - pd.Timedelta(days=7)
    assert gap.loc[due, "is_fraud"].notna().all() and gap.loc[~due, "is_fraud"].isna().all()
    assert (live["source"] == "simulator").all() and first["labels"] == len(live)

    # Same population: customers of the history, their habits, their hours.
    assert set(live["customer_id"]) <= set(history["customer_id"])
    assert set(live["terminal_id"]) < set(after["terminal_id"])
    in_history = (after["timestamp"] <= history_end) & (after["timestamp"] > history["timestamp"].min()
                                                        + pd.Timedelta(days=7))
    live_counts = seven_day_counts(after, after["fraud_probability"].notna()).mean()
    history_counts = seven_day_counts(after, in_history).mean()
    assert 0.5 < live_counts / history_counts < 2, (live_counts, history_counts)
    assert 0.5 < night_share(live["timestamp"]) / night_share(history["timestamp"]) < 2

    # Frauds, and decisions no more trigger-happy than on the model's holdout.
    assert first["true_frauds"] > 0
    holdout = first["holdout"]
    assert holdout["model_version"] == app_env.store.current_version()
    for band in ("review_or_decline", "decline"):
        limit = 2 * holdout[band]["false_positive_rate"]
        flagged = first["genuine_flagged_share"][band]
        if band == "decline":  # a handful of declines a day: allow one more than the holdout rate says
            limit += 1 / (first["sent"] - first["true_frauds"])
        assert flagged <= limit, (band, flagged, holdout[band])
    assert sum(first["decisions"].values()) == first["sent"]

    # The scoring use case queued them, as predict does (the persist function finds them stored).
    from harness.app import drain_queue

    queued = [json.loads(m.get_body()) for m in drain_queue(app_env)]
    assert sum(len(m["transactions"]) if "transactions" in m else 1 for m in queued) == first["sent"]

    # Again three hours later: only what happened since, nothing twice.
    clock["at"] += timedelta(hours=3)
    second = run(capsys, "simulate", "--count", "40")
    again = stored(app_env)
    new = again[again["fraud_probability"].notna() & ~again["transaction_id"].isin(live["transaction_id"])]
    assert 0 < second["sent"] == len(new) <= 40
    assert new["timestamp"].min() >= live["timestamp"].max()
    assert new["timestamp"].max() < pd.Timestamp(clock["at"])
    assert again["transaction_id"].is_unique
    assert set(new["customer_id"]) <= set(history["customer_id"])

    # A week later the labels of what was imported before they were due have come in.
    clock["at"] += timedelta(days=8)
    third = run(capsys, "simulate", "--count", "50")
    assert third["history_imported"]["labels_come_due"] > 0
    final = stored(app_env)
    old = final["timestamp"] < pd.Timestamp(clock["at"]) - pd.Timedelta(days=7)
    assert final.loc[old, "is_fraud"].notna().all()
    assert final["transaction_id"].is_unique
    assert third["population"]["batch"] == 3


def test_simulate_refuses_a_history_init_did_not_make(app_env, tmp_path, capsys):
    path = tmp_path / "real.csv"
    assert cli(["simulate", "--days", "3", "--count", "500", "--seed", "1", "--out", str(path)]) == 0
    assert cli(["import", str(path)]) == 0
    capsys.readouterr()
    assert cli(["simulate"]) == 1
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert "can only continue the simulated population" in line and "Traceback" not in captured.err
    assert captured.out == ""


def test_simulate_refuses_a_record_whose_history_is_not_in_the_database(app_env, capsys):
    from shared.operations import record_population
    from shared.simulator import history_for_volume

    history, population = history_for_volume(300, seed=2, n_days=3)
    record_population(app_env, population, history)  # recorded, never imported
    assert cli(["simulate"]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "does not hold the simulated history" in line


def test_seed_and_days_apply_to_csv_output_only(app_env, capsys):
    assert cli(["simulate", "--seed", "3"]) == 2
    assert "apply to --out only" in capsys.readouterr().err


# --- progress bars: on a terminal only ----------------------------------------------------------------



def run_cli_process(*args: str, env: dict[str, str], terminal: bool) -> tuple[int, str, str]:
    """The CLI in a new process, stdout piped; stderr piped, or a pseudo-terminal."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
    if not terminal:
        result = subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=ROOT, env={**base, **env},
                                capture_output=True, text=True, timeout=300)
        return result.returncode, result.stdout, result.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns
    with subprocess.Popen([sys.executable, "-m", "shared.cli", *args], cwd=ROOT, env={**base, **env},
                          stdout=subprocess.PIPE, stderr=slave) as process:
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed
                break
            if not data:
                break
            chunks.append(data)
        stdout = process.stdout.read().decode() if process.stdout else ""
        code = process.wait(timeout=300)
    os.close(master)
    return code, stdout, b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
def test_simulate_out_and_import_show_progress_on_a_terminal_only(tmp_path, no_local_settings, terminal):
    env = {"LOCAL_SETTINGS_FILE": str(tmp_path / "empty.settings.json"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'fraud.db'}"}
    csv = tmp_path / "history.csv"
    code, out, err = run_cli_process("simulate", "--days", "3", "--count", "3000", "--seed", "4", "--out", str(csv),
                                     env=env, terminal=terminal)
    assert code == 0 and out.startswith("wrote 3000 transactions") and len(out.splitlines()) == 1
    if terminal:
        assert "writing" in err and "100%" in err
    else:
        assert err == ""
    code, out, err = run_cli_process("import", str(csv), env=env, terminal=terminal)
    assert code == 0 and out.startswith("imported 3000 new transactions") and len(out.splitlines()) == 1
    if terminal:
        assert "importing" in err and "3.00k/3.00k [" in err
    else:
        assert err == ""


def test_retrain_progress_reads_the_training_rows(app_env, tmp_path, capsys, monkeypatch):
    class Terminal:
        """stderr as a terminal: the bar draws."""

        def __init__(self):
            self.text = ""

        def write(self, text):
            self.text += text

        def flush(self):
            pass

        def isatty(self):
            return True

    path = tmp_path / "h.csv"
    assert cli(["simulate", "--days", "20", "--count", "6000", "--seed", "2", "--out", str(path)]) == 0
    assert cli(["import", str(path)]) == 0
    assert capsys.readouterr().err == ""  # captured output: not a terminal, no bars
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    calls = []
    real_run = type(app_env.retraining).run

    def run_small(self, trigger="timer", force=False):  # the CLI's run, with a small forest
        from harness.app import SMALL_PARAMS

        calls.append(self.on_progress)
        self.params, self.report_builder = SMALL_PARAMS, None
        return real_run(self, trigger, force)

    monkeypatch.setattr(type(app_env.retraining), "run", run_small)
    assert cli(["retrain", "--force"]) == 0
    assert calls and calls[0] is not None
    assert re.search(r"\rreading training rows: 5\.\d\dk rows \[", terminal.text), terminal.text
