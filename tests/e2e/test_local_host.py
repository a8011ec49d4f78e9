"""The whole service running locally in the dev host, driven over real HTTP (issue 3).

The real function app (this repository's function folders, unchanged) is served by
``devhost.FunctionHost`` against a real Azurite and a SQLite file, as ``make run`` does:

* traffic POSTed to ``/api/predict`` reaches the database through the queue trigger,
  every transaction exactly once;
* labels POSTed to ``/api/labels`` past ``RETRAIN_THRESHOLD`` make the *timer* retrain,
  and ``/api/predict`` then answers with the new model version without a restart;
* messages the persist function can never store end up in ``<queue>-poison`` after
  ``maxDequeueCount`` attempts while good traffic keeps flowing.
"""
from __future__ import annotations

import base64
import json
import logging
import shutil
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from devhost import FunctionHost
from harness.waiting import wait_for
from shared.cli import ensure_resources
from shared.cli import main as cli
from shared.client import transaction_payload
from shared.simulator import simulate_for_volume
from shared.storage.schema import transactions
from shared.wiring import get_wiring, reset_wiring

APP_ROOT = Path(__file__).resolve().parents[2]
FUNCTION_FOLDERS = ("label_function", "persist_function", "predict_function", "retrain_function")
PERSIST_MALFORMED_LOG = "message %s (attempt %s) is malformed: %s"  # persist_function's log line


# --- helpers ------------------------------------------------------------------------------------

def app_settings(azurite, tmp_path: Path, **overrides: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": azurite.connection_string,
        "TRANSACTIONS_QUEUE": f"tx-{suffix}",
        "MODEL_CONTAINER": f"models-{suffix}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'fraud.db'}",
        "SQL_CONNECTION_STRING": "",
        "RETRAIN_THRESHOLD": "1000",
        "RETRAIN_SCHEDULE": "0 0 0 1 1 *",  # once a year: never during a test unless overridden
        "MODEL_REFRESH_SECONDS": "1",
        "PROMOTION_TOLERANCE": "0.005",
        "THRESHOLD_RULE": "max_f1",
        "HISTORY_TIMEOUT_MS": "2000",  # a loaded 2-core CI box should not turn the test degraded
        "MIN_TRAINING_ROWS": "200",
        "MODEL_SIGNING_KEY": "",
        **overrides,
    }


@pytest.fixture
def use_settings(monkeypatch):
    """Put app settings in the real environment (the dev host lets the real environment win)
    and make ``shared.app`` rebuild its process-wide services from them."""

    def apply(settings: dict[str, str]):
        for name in ("AzureWebJobsStorage__accountName", "AzureWebJobsStorage__blobServiceUri",
                     "AzureWebJobsStorage__queueServiceUri"):
            monkeypatch.delenv(name, raising=False)
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        reset_wiring()
        return get_wiring()

    yield apply
    reset_wiring()


def new_traffic(count: int, seed: int, token: str):
    """``count`` labeled transactions of today, none in the future, with ids unique to this test."""
    today = datetime.now(timezone.utc).date().isoformat()
    frame = simulate_for_volume(count, seed=seed, n_days=1, start_date=today)
    shift = max(frame["timestamp"].max().to_pydatetime() - datetime.now(timezone.utc), timedelta(0))
    frame["timestamp"] = frame["timestamp"] - shift
    frame["transaction_id"] = [f"e2e-{token}-{n:05d}" for n in range(len(frame))]
    return frame


def post_all(base_url: str, payloads: list[dict], workers: int = 6) -> list[requests.Response]:
    """POST every payload to /api/predict over real HTTP, a few at a time (one session per thread)."""
    local = threading.local()

    def post(payload):
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        return session.post(f"{base_url}/api/predict", json=payload, timeout=30)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(post, payloads))


def stored_ids(engine, prefix: str) -> list[str]:
    query = sa.select(transactions.c.transaction_id).where(transactions.c.transaction_id.like(f"{prefix}%"))
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(query)]


def queue_length(client: QueueClient) -> int:
    return client.get_queue_properties().approximate_message_count


# --- the pipeline, end to end over HTTP ---------------------------------------------------------

def test_local_service_scores_persists_retrains_on_timer_and_serves_new_model(azurite, tmp_path, use_settings,
                                                                               capsys):
    # The timer fires every 2 s from the start: until the labels arrive its runs are "skipped".
    settings = app_settings(azurite, tmp_path, RETRAIN_THRESHOLD="250", RETRAIN_SCHEDULE="*/2 * * * * *")
    services = use_settings(settings)

    # What `make run` does before serving: resources and a first model on a simulated history.
    assert cli(["init", "--history", "30000"]) == 0
    first_version = services.store.current_version()
    assert first_version, capsys.readouterr()

    token = uuid.uuid4().hex[:8]
    traffic = new_traffic(300, seed=11, token=token)
    payloads = [transaction_payload(row) for row in traffic.itertuples(index=False)]

    with FunctionHost(APP_ROOT, settings=settings, port=0) as host:
        names = {f.spec.name for f in host.functions}
        assert set(FUNCTION_FOLDERS) <= names
        assert [p.queue_name for p in host.pollers] == [settings["TRANSACTIONS_QUEUE"]]

        # 1. Traffic over real HTTP: every request is scored by the first model and queued.
        #    One request first, alone: it loads the model (see the cold-start test below).
        started = time.monotonic()
        responses = post_all(host.base_url, payloads[:1]) + post_all(host.base_url, payloads[1:])
        assert [r.status_code for r in responses] == [200] * len(payloads), \
            [r.text for r in responses if r.status_code != 200][:3]
        bodies = [r.json() for r in responses]
        assert [b["transaction_id"] for b in bodies] == [p["transaction_id"] for p in payloads]
        assert {b["model_version"] for b in bodies} == {first_version}
        assert all(0.0 <= b["fraud_probability"] <= 1.0 for b in bodies)
        http_seconds = time.monotonic() - started

        # 2. The queue trigger persists each one, exactly once.
        expected = sorted(p["transaction_id"] for p in payloads)
        wait_for(lambda: len(stored_ids(services.engine, f"e2e-{token}-")) >= len(expected), 30,
                 "all scored transactions persisted by the queue trigger")
        time.sleep(0.5)  # a duplicate insert, if any, would show up now
        assert sorted(stored_ids(services.engine, f"e2e-{token}-")) == expected
        with services.engine.connect() as conn:
            stored = {row.transaction_id: row for row in conn.execute(
                sa.select(transactions).where(transactions.c.transaction_id.like(f"e2e-{token}-%")))}
        for body in bodies:
            row = stored[body["transaction_id"]]
            assert row.model_version == first_version
            assert row.fraud_probability == pytest.approx(body["fraud_probability"], abs=1e-6)
        raw_queue = QueueClient.from_connection_string(azurite.connection_string, settings["TRANSACTIONS_QUEUE"])
        wait_for(lambda: queue_length(raw_queue) == 0, 10, "transactions queue drained")

        # Nothing to retrain on yet: the timer's runs so far were skipped.
        def timer_runs():
            return [r for r in services.runs.recent(limit=1000) if r["trigger"] == "timer"]

        wait_for(timer_runs, 10, "the retrain timer fired (every 2 s)")
        assert {r["status"] for r in timer_runs()} == {"skipped"}, timer_runs()

        # 3. True labels arrive past the threshold.
        labels = [{"transaction_id": row.transaction_id, "is_fraud": bool(row.label)}
                  for row in traffic.itertuples(index=False)]
        response = requests.post(f"{host.base_url}/api/labels", json={"labels": labels}, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json() == {"received": len(labels), "stored": len(labels)}
        labeled_at = time.monotonic()

        # 4. The timer (served by the host, not called by the test) retrains on them.
        def trained_run():
            runs = services.runs.recent(limit=50)
            return next((r for r in runs if r["trigger"] == "timer" and r["status"] not in ("skipped", "running")),
                        None)

        run = wait_for(trained_run, 45, "a timer-triggered training run after the labels")
        retrain_seconds = time.monotonic() - labeled_at
        assert run["status"] in ("promoted", "rejected"), run
        assert run["new_labels"] >= 250 and run["labeled_count"] == 30_000 + len(labels)
        assert run["champion_version"] == first_version
        assert run["model_version"] and run["model_version"] != first_version
        if run["status"] == "rejected":
            # The gate judged it worse than the champion; promote it by hand (an operator's
            # `models promote`) to check that the running host picks up a new version.
            assert cli(["models", "promote", run["model_version"]]) == 0
        new_version = run["model_version"]
        assert services.store.current_version() == new_version

        # 5. Without restarting the host, predict serves the new version (refresh every 1 s) to
        #    new transactions (a replayed id keeps its first answer: each probe is a new one).
        probes = iter(range(1000))

        def served_version():
            probe = dict(payloads[0], transaction_id=f"e2e-{token}-probe-{next(probes)}")
            answer = requests.post(f"{host.base_url}/api/predict", json=probe, timeout=30)
            assert answer.status_code == 200, answer.text
            return answer.json()["model_version"] == new_version

        wait_for(served_version, 15, f"predict answering with model {new_version}", interval=0.5)
        wait_for(lambda: stored_ids(services.engine, f"e2e-{token}-probe"), 15, "the probe transactions persisted")

    print(f"\n{len(payloads)} predictions over HTTP in {http_seconds:.1f}s; retrained by the timer "
          f"{retrain_seconds:.1f}s after the labels ({run['status']})")


# --- poison messages ----------------------------------------------------------------------------

def app_copy(tmp_path: Path, queues: dict) -> tuple[Path, str]:
    """The real function folders, unchanged, in a temporary app whose host.json differs only in
    ``extensions.queues`` (``queues`` is merged over the repository's). The dev host always reads
    ``<app root>/host.json``, so this is how a test shortens ``visibilityTimeout``.

    The folders get a suffix: the dev host imports them as ``__app__.<folder>`` (as the Python
    worker does), and this process may already hold the repository's own ``__app__.persist_function``.
    """
    token = uuid.uuid4().hex[:8]
    root = tmp_path / "app"
    root.mkdir()
    host_json = json.loads((APP_ROOT / "host.json").read_text())
    host_json["extensions"]["queues"].update(queues)
    (root / "host.json").write_text(json.dumps(host_json, indent=2))
    for folder in FUNCTION_FOLDERS:
        shutil.copytree(APP_ROOT / folder, root / f"{folder}_{token}", ignore=shutil.ignore_patterns("__pycache__"))
    return root, token


def test_poison_messages_leave_the_queue_after_max_dequeue_count_while_good_traffic_is_persisted(
        azurite, tmp_path, use_settings, model_factory, monkeypatch, caplog):
    max_dequeue = json.loads((APP_ROOT / "host.json").read_text())["extensions"]["queues"]["maxDequeueCount"]
    # maxDequeueCount stays the repository's (5); only the delay before a retry is shortened
    # (visibilityTimeout 10 s there: 4 retries would take over 40 s).
    root, token = app_copy(tmp_path, {"visibilityTimeout": "00:00:00"})
    monkeypatch.setattr(sys, "path", list(sys.path))  # the host puts the app root first; undone after
    settings = app_settings(azurite, tmp_path)
    services = use_settings(settings)
    ensure_resources(services)
    first_version = model_factory.publish(services.store)

    queue_name = settings["TRANSACTIONS_QUEUE"]
    sender = QueueClient.from_connection_string(azurite.connection_string, queue_name,
                                                message_encode_policy=TextBase64EncodePolicy())
    raw_sender = QueueClient.from_connection_string(azurite.connection_string, queue_name)
    raw_poison = QueueClient.from_connection_string(azurite.connection_string, f"{queue_name}-poison")

    not_json = "this is not JSON {"
    malformed = json.dumps({"transaction_id": f"bad-{token}", "amount": "lots"})  # JSON, not a scored transaction
    not_base64 = "plain text, not base64!"  # the host cannot even decode it
    caplog.set_level(logging.INFO)

    with FunctionHost(root, settings=settings, port=0) as host:
        assert sorted(f.spec.name for f in host.functions) == sorted(f"{f}_{token}" for f in FUNCTION_FOLDERS)
        assert host.pollers[0].options.max_dequeue_count == max_dequeue
        poisoned_ids = [sender.send_message(not_json).id, sender.send_message(malformed).id,
                        raw_sender.send_message(not_base64).id]

        # Good traffic sent after the poison messages, over HTTP, in two waves (the first
        # request alone: it loads the model, see the cold-start test below).
        traffic = new_traffic(60, seed=23, token=token)
        payloads = [transaction_payload(row) for row in traffic.itertuples(index=False)]
        first_wave = post_all(host.base_url, payloads[:1]) + post_all(host.base_url, payloads[1:30], workers=4)
        assert [r.status_code for r in first_wave] == [200] * 30

        wait_for(lambda: raw_poison.get_queue_properties().approximate_message_count >= 3, 30,
                 "three messages in the poison queue")
        second_wave = post_all(host.base_url, payloads[30:], workers=4)
        assert [r.status_code for r in second_wave] == [200] * 30
        assert {r.json()["model_version"] for r in first_wave + second_wave} == {first_version}

        expected = sorted(p["transaction_id"] for p in payloads)
        wait_for(lambda: len(stored_ids(services.engine, f"e2e-{token}-")) >= len(expected), 30,
                 "every good transaction persisted")
        wait_for(lambda: queue_length(sender) == 0, 15, "the transactions queue empty")
        time.sleep(1.0)  # a (wrong) extra attempt at a poisoned message would show up now

    assert sorted(stored_ids(services.engine, f"e2e-{token}-")) == expected
    assert stored_ids(services.engine, f"bad-{token}") == []

    # The poison queue holds the three messages, text unchanged (still base64 for the first two).
    in_poison = raw_poison.peek_messages(max_messages=32)
    assert sorted(m.content for m in in_poison) == sorted(
        [base64.b64encode(not_json.encode()).decode(), base64.b64encode(malformed.encode()).decode(), not_base64])
    assert sorted(base64.b64decode(m.content).decode() for m in in_poison if m.content != not_base64) == \
        sorted([not_json, malformed])

    # The two decodable ones were tried exactly maxDequeueCount times, then moved;
    # the undecodable one was moved without running the function.
    attempts: dict[str, list[int]] = {}
    for record in caplog.records:
        if record.msg == PERSIST_MALFORMED_LOG:
            attempts.setdefault(record.args[0], []).append(int(record.args[1]))
    assert {k: sorted(v) for k, v in attempts.items()} == {
        poisoned_ids[0]: list(range(1, max_dequeue + 1)),
        poisoned_ids[1]: list(range(1, max_dequeue + 1)),
    }
    moved = [r.getMessage() for r in caplog.records
             if r.name == "devhost" and "Moving message to queue" in r.getMessage()]
    assert len(moved) == 3 and all(f"'{queue_name}-poison'" in line for line in moved), moved


# --- cold start ---------------------------------------------------------------------------------

def test_concurrent_first_requests_are_all_scored_while_the_model_loads(azurite, tmp_path, use_settings,
                                                                         model_factory):
    settings = app_settings(azurite, tmp_path)
    services = use_settings(settings)
    ensure_resources(services)
    version = model_factory.publish(services.store)
    token = uuid.uuid4().hex[:8]
    payloads = [transaction_payload(row) for row in new_traffic(12, seed=5, token=token).itertuples(index=False)]
    with FunctionHost(APP_ROOT, settings=settings, port=0) as host:
        barrier = threading.Barrier(len(payloads))

        def post(payload):
            barrier.wait()
            return requests.post(f"{host.base_url}/api/predict", json=payload, timeout=30)

        with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
            responses = list(pool.map(post, payloads))
    assert [r.status_code for r in responses] == [200] * len(payloads), [r.text for r in responses][:2]
    assert {r.json()["model_version"] for r in responses} == {version}
