"""The operator CLI against real Azurite and SQLite."""
import json
import subprocess
import sys
from pathlib import Path

from shared.cli import main as cli
from shared.operations import table_counts
from shared.storage.engines import create_db_engine
from shared.storage.schema import create_schema

ROOT = Path(__file__).resolve().parents[2]


def test_init_is_safe_to_run_twice(app_env, capsys):
    assert cli(["init", "--history", "30000"]) == 0
    first = app_env.store.current_version()
    assert first and app_env.labels.labeled_count() == 30_000
    assert cli(["init"]) == 0
    assert app_env.store.current_version() == first
    assert table_counts(app_env)["transactions"] == 30_000
    assert "nothing more to do" in capsys.readouterr().out


# `simulate` without --out (continuing init's population): tests/integration/test_simulate_live.py


def test_simulate_is_deterministic_with_seed(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    for path in (a, b):
        assert cli(["simulate", "--days", "3", "--count", "2000", "--seed", "9", "--start", "2026-01-01",
                    "--out", str(path)]) == 0
    assert a.read_bytes() == b.read_bytes()
    header = a.read_text().splitlines()[0]
    assert header == "transaction_id,timestamp,customer_id,terminal_id,amount,label"


def test_import_is_idempotent(app_env, tmp_path, capsys):
    path = tmp_path / "h.csv"
    cli(["simulate", "--days", "5", "--count", "5000", "--seed", "1", "--out", str(path)])
    assert cli(["import", str(path)]) == 0
    assert cli(["import", str(path)]) == 0
    out = capsys.readouterr().out
    assert "imported 5000 new" in out and "imported 0 new transactions (5000 already present)" in out
    assert table_counts(app_env)["transactions"] == 5000


def test_models_list_promote_rollback(app_env, model_factory, capsys):
    first = model_factory.publish(app_env.store)
    second = model_factory.publish(app_env.store)
    assert app_env.store.current_version() == second
    assert cli(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"* {second}" in listing and f"  {first}" in listing
    assert cli(["models", "rollback"]) == 0
    assert app_env.store.current_version() == first
    assert cli(["models", "promote", second]) == 0
    assert app_env.store.current_version() == second


def test_db_check_reports_on_a_reachable_database(app_env, capsys):
    assert cli(["db-check"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["reachable"] and status["dialect"] == "sqlite"
    assert set(status["row_counts"]) == {"transactions", "labels", "label_events", "training_runs",
                                         "customer_buckets", "terminal_buckets"}


def test_db_check_on_an_unreachable_sql_server_fails_clearly_without_leaking_the_password():
    env = {"PATH": "/usr/bin:/bin", "SQL_CONNECTION_STRING":
           "Server=tcp:127.0.0.1,1;Database=fraud;Uid=app;Pwd=Sup3rSecret!;Encrypt=yes;Connection Timeout=2;"}
    result = subprocess.run([sys.executable, "-m", "shared.cli", "db-check"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    status = json.loads(result.stdout)
    assert status["reachable"] is False and status["dialect"] == "mssql" and status["driver"] == "pyodbc"
    assert status["error"]  # e.g. the ODBC driver is missing or the server refused
    assert "Sup3rSecret" not in result.stdout + result.stderr


def test_poison_messages_can_be_listed_and_requeued(app_env, capsys):
    from azure.storage.queue import QueueClient, TextBase64EncodePolicy

    from harness.app import drain_queue

    poison = QueueClient.from_connection_string(app_env.settings.storage_connection, app_env.settings.poison_queue,
                                                message_encode_policy=TextBase64EncodePolicy())
    poison.send_message('{"transaction_id": "x"}')
    assert cli(["poison", "list"]) == 0
    assert "0 valid item(s)" in capsys.readouterr().out
    assert cli(["poison", "requeue"]) == 0
    assert "moved 1 message(s)" in capsys.readouterr().out
    [message] = drain_queue(app_env)
    assert json.loads(message.get_body()) == {"transaction_id": "x"}
    assert list(poison.peek_messages()) == []


def test_labels_summary_and_revoke_by_source(app_env, tmp_path, capsys):
    path = tmp_path / "h.csv"
    assert cli(["simulate", "--days", "2", "--count", "200", "--seed", "3", "--out", str(path)]) == 0
    assert cli(["import", str(path)]) == 0
    capsys.readouterr()
    assert cli(["labels", "summary"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["source"], row["labels"], row["revoked"]) == ("import", 200, 0)
    assert cli(["labels", "revoke", "--source", "import", "--since", "2000-01-01"]) == 0
    assert "revoked 200 label(s)" in capsys.readouterr().out
    assert app_env.labels.labeled_count() == 0
    assert cli(["labels", "revoke"]) == 2  # refuses to revoke everything


# --- the CLI never answers with a traceback ----------------------------------------------------------

import base64  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

from devhost.azurite import ACCOUNT, free_port  # noqa: E402

WRONG_KEY = base64.b64encode(b"not the account key of devstoreaccount1!!").decode()
DB_PASSWORD = "abc@defghi"  # an unencoded @: make_url reads "abc" as the password and "defghi@..." as the host


def run_cli(*args: str, env: dict[str, str], cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
            "PYTHONPATH": str(ROOT)}  # to run it from another folder
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=timeout)


def storage_with(endpoint_port: int | None, key: str, azurite) -> str:
    blob = endpoint_port or azurite.blob_port
    queue = endpoint_port or azurite.queue_port
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
            f"BlobEndpoint=http://127.0.0.1:{blob}/{ACCOUNT};QueueEndpoint=http://127.0.0.1:{queue}/{ACCOUNT};")


@pytest.fixture(autouse=True)
def no_local_settings(tmp_path, monkeypatch):
    """CLI calls read no developer's local.settings.json (the in-process ones would export it)."""
    empty = tmp_path / "empty.settings.json"
    empty.write_text('{"Values": {}}')
    monkeypatch.setenv("LOCAL_SETTINGS_FILE", str(empty))
    return empty


@pytest.fixture
def fault_env(azurite, tmp_path, no_local_settings):
    """Settings for each fault: storage and a database that work, except for the one named."""
    suffix = uuid.uuid4().hex[:10]
    good_db = f"sqlite:///{tmp_path / 'good.db'}"
    create_schema(create_db_engine(good_db))
    from azure.storage.blob import ContainerClient
    from azure.storage.queue import QueueClient

    ContainerClient.from_connection_string(azurite.connection_string, f"models-{suffix}").create_container()
    QueueClient.from_connection_string(azurite.connection_string, f"tx-{suffix}-poison").create_queue()
    common = {"TRANSACTIONS_QUEUE": f"tx-{suffix}", "MODEL_CONTAINER": f"models-{suffix}",
              "LOCAL_SETTINGS_FILE": str(no_local_settings), "MIN_TRAINING_ROWS": "10"}
    good_storage = azurite.connection_string
    return {
        "storage unreachable": {**common, "AzureWebJobsStorage": storage_with(free_port(), azurite_key(), azurite),
                                "DATABASE_URL": good_db},
        "storage key refused": {**common, "AzureWebJobsStorage": storage_with(None, WRONG_KEY, azurite),
                                "DATABASE_URL": good_db},
        "database missing": {**common, "AzureWebJobsStorage": good_storage,
                             "DATABASE_URL": f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'fraud.db'}"},
        "database unreachable": {**common, "AzureWebJobsStorage": good_storage,
                                 "DATABASE_URL": f"postgresql+psycopg://fraud:{DB_PASSWORD}@127.0.0.1:{free_port()}/fraud"},
    }


def azurite_key() -> str:
    from devhost.azurite import ACCOUNT_KEY

    return ACCOUNT_KEY


# The commands, and the resources each needs: it must fail (one line) when one of them is faulty.
COMMANDS = {
    ("models", "list"): {"storage"},
    ("models", "rollback"): {"storage"},
    ("poison", "list"): {"storage"},
    ("runs",): {"database"},
    ("db-check",): {"database"},
    ("retrain", "--force"): {"storage", "database"},
}


def assert_no_secret(text: str) -> None:
    from devhost.azurite import ACCOUNT_KEY

    assert ACCOUNT_KEY not in text and WRONG_KEY not in text
    assert ACCOUNT_KEY[:12] not in text and WRONG_KEY[:12] not in text
    leaked = [DB_PASSWORD[i:i + 3] for i in range(len(DB_PASSWORD) - 2) if DB_PASSWORD[i:i + 3] in text]
    assert not leaked, f"password fragments {leaked} shown"


@pytest.mark.parametrize("fault", ["storage unreachable", "storage key refused", "database missing",
                                   "database unreachable"])
def test_every_command_fails_with_one_line_not_a_traceback(fault_env, fault):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=3) as pool:  # each run pays the CLI's ~2-5 s of imports
        results = dict(zip(COMMANDS, pool.map(lambda command: run_cli(*command, env=fault_env[fault]), COMMANDS)))
    failures = {}
    for command, needs in COMMANDS.items():
        result = results[command]
        output = result.stdout + result.stderr
        assert "Traceback" not in output, (command, output)
        assert_no_secret(output)
        lines = result.stderr.strip().splitlines()
        affected = fault.split()[0] in needs
        if affected:
            assert result.returncode != 0, (command, result.stdout, result.stderr)
            assert len(lines) == 1, (command, result.stderr)
            assert fault.split()[0] in lines[0], (command, lines[0])
            assert len(lines[0]) <= 600
            failures[" ".join(command)] = (result.returncode, lines[0])
        elif command == ("models", "rollback"):  # no model exists in the fresh container
            assert result.returncode == 2 and lines == ["error: no earlier promoted version to roll back to"], \
                result.stderr
        else:
            assert result.returncode == 0, (command, result.stdout, result.stderr)
            assert lines == [], (command, result.stderr)
    print(json.dumps(failures, indent=1))


def test_bad_arguments_and_missing_models_are_one_line_exit_2(fault_env):
    env = fault_env["database missing"]  # storage works
    for args, expected in ((("models", "promote", "../escape"), "invalid model version"),
                           (("models", "promote", "v-none"), "storage"),
                           (("models", "report", "v-none", "--out", "/tmp/never"), "has no report")):
        result = run_cli(*args, env=env)
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and len(lines) == 1 and expected in lines[0], (args, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr


def test_db_check_with_an_unencoded_at_in_the_password_shows_no_part_of_it(fault_env):
    result = run_cli("db-check", env=fault_env["database unreachable"])
    assert result.returncode == 2
    status = json.loads(result.stdout)
    assert status["reachable"] is False and status["url"].startswith("postgresql+psycopg://fraud:***@")
    assert_no_secret(result.stdout + result.stderr)


# --- poison list: every message, whatever it holds ---------------------------------------------------

def test_poison_list_shows_every_message_robustly_and_leaves_them_visible(app_env, no_local_settings, capsys):
    from azure.storage.queue import QueueClient

    raw = QueueClient.from_connection_string(app_env.settings.storage_connection, app_env.settings.poison_queue)
    bodies = {
        "not base64": "%%% this is not base64 %%%",
        "deep JSON": base64.b64encode(b"[" * 20_000 + b"]" * 20_000).decode(),
        "not UTF-8": base64.b64encode(b"\xff\xfe\x00garbage").decode(),
        "10,000 empty items": base64.b64encode(json.dumps({"transactions": [{}] * 10_000}).encode()).decode(),
        "control characters": base64.b64encode(json.dumps({"transaction_id": "x\n\x1b[2J",
                                                           "customer_id": "\u202e"}).encode()).decode(),
    }
    for body in bodies.values():
        raw.send_message(body)
    for n in range(40):
        raw.send_message(base64.b64encode(json.dumps({"transaction_id": f"p{n}"}).encode()).decode())
    total = len(bodies) + 40

    assert cli(["poison", "list"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    lines = captured.out.strip().splitlines()
    message_lines = [line for line in lines if re.match(r"^\S+  dequeued \d+x  inserted \S+  \d+ B  ", line)]
    assert len(message_lines) == total, captured.out
    assert f"{total} message(s)" in lines[-1]
    assert all(len(line) <= 500 for line in lines) and "\x1b" not in captured.out
    text = captured.out
    assert "not base64" in text and "nested too deeply" in text and "not UTF-8" in text
    assert "and 9997 more" in text

    # Listed, not consumed: all still there and visible at once (requeue moves them all).
    assert cli(["poison", "list", "--limit", "5"]) == 0
    limited = capsys.readouterr().out.strip().splitlines()
    assert len(limited) == 6 and "--limit" in limited[-1]
    assert cli(["poison", "requeue"]) == 0
    assert f"moved {total} message(s)" in capsys.readouterr().out


# --- local.settings.json, as the host reads it -------------------------------------------------------

def test_cli_reads_local_settings_with_sqlite_paths_relative_to_the_settings_folder(azurite, tmp_path):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / ".local").mkdir(parents=True)
    elsewhere.mkdir()
    create_schema(create_db_engine(f"sqlite:///{project / '.local' / 'fraud.db'}"))
    settings = project / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": {
        "AzureWebJobsStorage": azurite.connection_string, "DATABASE_URL": "sqlite:///.local/fraud.db"}}))
    result = run_cli("runs", env={"LOCAL_SETTINGS_FILE": str(settings)}, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert list(elsewhere.iterdir()) == []  # no stray fraud.db where it was run
    # The real environment wins over the file.
    other = tmp_path / "other.db"
    result = run_cli("db-check", env={"LOCAL_SETTINGS_FILE": str(settings), "DATABASE_URL": f"sqlite:///{other}"},
                     cwd=elsewhere)
    assert result.returncode == 0 and json.loads(result.stdout)["url"] == f"sqlite:///{other}"
    # A settings file named explicitly must exist.
    result = run_cli("runs", env={"LOCAL_SETTINGS_FILE": str(tmp_path / "missing.json")}, cwd=elsewhere)
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_local_settings_loader_keeps_the_real_environment():
    from shared.config import load_local_settings

    environ = {"DATABASE_URL": "sqlite:///mine.db"}
    path = ROOT / "local.settings.json.example"
    added = load_local_settings(path, environ)
    assert environ["DATABASE_URL"] == "sqlite:///mine.db" and "DATABASE_URL" not in added
    assert environ["TRANSACTIONS_QUEUE"] == "transactions" and "TRANSACTIONS_QUEUE" in added
    environ = {}
    load_local_settings(path, environ)
    assert environ["DATABASE_URL"] == f"sqlite:///{ROOT / '.local' / 'fraud.db'}"
