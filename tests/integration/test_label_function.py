"""label_function: true outcomes stored apart from predictions, never lost."""
import json
from datetime import datetime, timezone

import label_function
import persist_function
from azure.functions.queue import QueueMessage
from shared.schema import ScoredTransaction, Transaction
from shared.storage import db
from harness.app import http_request


def post(body, **kwargs):
    response = label_function.main(http_request(body, url="/api/labels", **kwargs))
    return response.status_code, json.loads(response.get_body())


def persist(transaction_id: str):
    scored = ScoredTransaction(Transaction(transaction_id, datetime(2026, 11, 1, tzinfo=timezone.utc), "C", "T", 5.0),
                               0.9, True, "v1", datetime(2026, 11, 1, tzinfo=timezone.utc))
    persist_function.main(QueueMessage(id="m", body=json.dumps(scored.to_message()).encode(), dequeue_count=1))


def test_label_before_its_transaction_is_kept_and_joins_later(app_env):
    status, body = post({"labels": [{"transaction_id": "late-tx", "is_fraud": True}]})
    assert (status, body) == (200, {"received": 1, "stored": 1})
    assert db.count_labeled_transactions(app_env.engine) == 0  # nothing to join yet
    persist("late-tx")
    assert db.count_labeled_transactions(app_env.engine) == 1
    row = db.fetch_transaction(app_env.engine, "late-tx")
    assert row["label"] is True and row["predicted_fraud"] is True


def test_a_later_label_replaces_the_earlier_one(app_env):
    persist("tx-a")
    post({"labels": [{"transaction_id": "tx-a", "is_fraud": True}]})
    post({"labels": [{"transaction_id": "tx-a", "is_fraud": False}]})
    assert db.fetch_transaction(app_env.engine, "tx-a")["label"] is False
    assert db.table_counts(app_env.engine)["labels"] == 1


def test_bad_label_batches_are_400_naming_items(app_env):
    status, body = post({"labels": [{"transaction_id": "ok", "is_fraud": "yes"}]})
    assert status == 400 and body["errors"][0]["field"] == "labels[0].is_fraud"
    assert post([1, 2])[0] == 400
    assert post(None, raw=b"{}", content_type="text/csv")[0] == 415
    assert db.table_counts(app_env.engine)["labels"] == 0


def test_predictions_never_count_as_labels(app_env):
    persist("tx-b")  # predicted fraud, but no true label yet
    assert db.count_labeled_transactions(app_env.engine) == 0


def test_database_down_is_503_with_retry_after_not_500(app_env, monkeypatch, tmp_path):
    monkeypatch.setattr(app_env, "engine", db.create_db_engine(f"sqlite:///{tmp_path}/missing/dir/x.db"))
    response = label_function.main(http_request({"labels": [{"transaction_id": "t", "is_fraud": True}]},
                                                url="/api/labels"))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert "retry" in json.loads(response.get_body())["message"]
