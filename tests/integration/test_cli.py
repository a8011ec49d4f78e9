"""The operator CLI against real Azurite and SQLite."""
import json
import subprocess
import sys
from pathlib import Path


from shared.cli import main as cli
from shared.operations import table_counts

ROOT = Path(__file__).resolve().parents[2]


def test_init_is_safe_to_run_twice(app_env, capsys):
    assert cli(["init", "--history", "30000"]) == 0
    first = app_env.store.current_version()
    assert first and app_env.labels.labeled_count() == 30_000
    assert cli(["init"]) == 0
    assert app_env.store.current_version() == first
    assert table_counts(app_env)["transactions"] == 30_000
    assert "nothing more to do" in capsys.readouterr().out


def test_simulate_scores_onto_the_queue_and_records_labels(app_with_model, capsys):
    assert cli(["simulate", "--count", "300", "--seed", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["enqueued"] == 300 and summary["labels"] == 300 and summary["seed"] == 5
    from harness.app import drain_queue

    assert len(drain_queue(app_with_model)) == 300
    assert table_counts(app_with_model)["labels"] == 300


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


def test_labels_summary_and_revoke_by_source(app_with_model, capsys):
    assert cli(["simulate", "--count", "200", "--seed", "3"]) == 0
    capsys.readouterr()
    assert cli(["labels", "summary"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["source"], row["labels"], row["revoked"]) == ("simulator", 200, 0)
    assert cli(["labels", "revoke", "--source", "simulator", "--since", "2000-01-01"]) == 0
    assert "revoked 200 label(s)" in capsys.readouterr().out
    assert app_with_model.labels.labeled_count() == 0
    assert cli(["labels", "revoke"]) == 2  # refuses to revoke everything
