"""persist_function: idempotent inserts; malformed messages and DB errors raise for the host."""
import json
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from azure.functions.queue import QueueMessage

import persist_function
from shared.schema import ScoredTransaction, Transaction
from shared.storage.engines import create_db_engine
from shared.storage.schema import transactions
from shared.usecases.persisting import MalformedMessage

SCORED = ScoredTransaction(
    Transaction("tx-1", datetime(2026, 11, 23, 10, tzinfo=timezone.utc), "C1", "T1", 12.5),
    0.12, False, "v1", datetime(2026, 11, 23, 10, 0, 1, tzinfo=timezone.utc),
)


def message(body: bytes, dequeue_count: int = 1) -> QueueMessage:
    # The worker hands functions this concrete class (with dequeue_count).
    return QueueMessage(id="m1", body=body, dequeue_count=dequeue_count)


def rows(services):
    with services.engine.connect() as conn:
        return conn.execute(sa.select(transactions)).mappings().all()


def test_inserts_the_scored_transaction(app_env):
    persist_function.main(message(json.dumps(SCORED.to_message()).encode()))
    [row] = rows(app_env)
    assert row["transaction_id"] == "tx-1" and row["amount"] == 12.5 and row["fraud_probability"] == 0.12
    assert row["predicted_fraud"] is False and row["model_version"] == "v1"
    assert row["timestamp"] == datetime(2026, 11, 23, 10)


def test_redelivery_neither_duplicates_nor_fails(app_env):
    body = json.dumps(SCORED.to_message()).encode()
    for attempt in (1, 2, 3):
        persist_function.main(message(body, dequeue_count=attempt))
    assert len(rows(app_env)) == 1


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe", b"[]", b'{"transaction_id": "x"}',
                                  json.dumps({**SCORED.to_message(), "amount": "NaN"}).encode()])
def test_malformed_message_raises_so_the_host_retries_then_poisons(app_env, body, caplog):
    with pytest.raises(MalformedMessage):
        persist_function.main(message(body))
    assert rows(app_env) == []
    assert "malformed" in caplog.text


def test_database_error_raises(app_env, monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(app_env.transactions, "engine", create_db_engine(f"sqlite:///{tmp_path}/missing/dir/x.db"))
    with pytest.raises(sa.exc.OperationalError):
        persist_function.main(message(json.dumps(SCORED.to_message()).encode()))
    assert "not persisted" in caplog.text


def batch_body(*items) -> bytes:
    return json.dumps({"transactions": list(items)}).encode()


def scored_message(transaction_id: str) -> dict:
    return {**SCORED.to_message(), "transaction_id": transaction_id}


def test_a_batch_message_inserts_every_transaction_once(app_env):
    body = batch_body(*(scored_message(f"b{i}") for i in range(5)))
    persist_function.main(message(body))
    persist_function.main(message(body, dequeue_count=2))  # redelivered
    assert sorted(r["transaction_id"] for r in rows(app_env)) == [f"b{i}" for i in range(5)]


def test_a_malformed_item_does_not_lose_the_good_ones(app_env, caplog):
    body = batch_body(scored_message("good-1"), {"transaction_id": "bad"}, scored_message("good-2"))
    with pytest.raises(MalformedMessage, match="item 1"):
        persist_function.main(message(body))
    assert sorted(r["transaction_id"] for r in rows(app_env)) == ["good-1", "good-2"]
    # Retries (then the poison queue) never insert the good ones twice.
    with pytest.raises(MalformedMessage):
        persist_function.main(message(body, dequeue_count=2))
    assert len(rows(app_env)) == 2


def test_a_message_of_thousands_of_bad_items_logs_a_bounded_line(app_env, caplog):
    body = batch_body(*([{}] * 10_000))  # ~40 KB on the queue
    assert len(body) < 64 * 1024
    caplog.set_level("DEBUG")
    with pytest.raises(MalformedMessage) as info:
        persist_function.main(message(body))
    assert len(str(info.value)) <= 2048
    assert "and 9990 more" in str(info.value)
    assert str(info.value).count("item ") <= 11
    lines = [record.getMessage() for record in caplog.records]
    assert any("malformed" in line for line in lines)
    assert max(len(line) for line in lines) <= 2048, max(len(line) for line in lines)


def test_deeply_nested_json_is_malformed_not_a_crash(app_env, caplog):
    with pytest.raises(MalformedMessage, match="nested too deeply"):
        persist_function.main(message(b"[" * 100_000 + b"]" * 100_000))
    assert rows(app_env) == []


def test_old_messages_without_decision_fields_still_persist(app_env):
    """Messages queued by the previous version (no decision, thresholds, reasons) persist."""
    old = {key: value for key, value in SCORED.to_message().items()
           if key not in ("decision", "review_threshold", "decline_threshold", "rule", "reasons")}
    persist_function.main(message(json.dumps({**old, "transaction_id": "old-1"}).encode()))
    [row] = rows(app_env)
    assert row["transaction_id"] == "old-1" and row["decision"] is None and row["reasons"] is None


def test_an_overlong_model_version_is_malformed_not_a_failed_batch(app_env):
    body = batch_body(scored_message("ok-1"), {**scored_message("long"), "model_version": "v" * 65})
    with pytest.raises(MalformedMessage, match="model_version"):
        persist_function.main(message(body))
    assert [r["transaction_id"] for r in rows(app_env)] == ["ok-1"]
