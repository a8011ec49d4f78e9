"""label_function: true outcomes stored apart from predictions, never lost."""
import json
from datetime import datetime, timezone

from azure.functions.queue import QueueMessage

import label_function
import persist_function
from harness.app import http_request
from shared.operations import table_counts
from shared.schema import ScoredTransaction, Transaction
from shared.storage.engines import create_db_engine
from shared.storage.labels import LabelFilter


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
    assert app_env.labels.labeled_count() == 0  # nothing to join yet
    persist("late-tx")
    assert app_env.labels.labeled_count() == 1
    row = app_env.transactions.find("late-tx")
    assert row["label"] is True and row["predicted_fraud"] is True


def test_a_later_label_replaces_the_earlier_one(app_env):
    persist("tx-a")
    post({"labels": [{"transaction_id": "tx-a", "is_fraud": True}]})
    post({"labels": [{"transaction_id": "tx-a", "is_fraud": False}]})
    assert app_env.transactions.find("tx-a")["label"] is False
    assert table_counts(app_env)["labels"] == 1


def test_bad_label_batches_are_400_naming_items(app_env):
    status, body = post({"labels": [{"transaction_id": "ok", "is_fraud": "yes"}]})
    assert status == 400 and body["errors"][0]["field"] == "labels[0].is_fraud"
    assert post([1, 2])[0] == 400
    assert post(None, raw=b"{}", content_type="text/csv")[0] == 415
    assert table_counts(app_env)["labels"] == 0


def test_predictions_never_count_as_labels(app_env):
    persist("tx-b")  # predicted fraud, but no true label yet
    assert app_env.labels.labeled_count() == 0


def test_database_down_is_503_with_retry_after_not_500(app_env, monkeypatch, tmp_path):
    monkeypatch.setattr(app_env.labels, "engine", create_db_engine(f"sqlite:///{tmp_path}/missing/dir/x.db"))
    response = label_function.main(http_request({"labels": [{"transaction_id": "t", "is_fraud": True}]},
                                                url="/api/labels"))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert "retry" in json.loads(response.get_body())["message"]


def test_every_label_records_its_source_and_key(app_env):
    """Who taught the model what: the declared source and a fingerprint of the function key
    (never the key itself), so one key's or source's labels can be listed and revoked."""
    persist("tx-s")
    key = "labels-key-of-the-chargeback-feed"
    post({"source": "chargebacks", "labels": [{"transaction_id": "tx-s", "is_fraud": True}]},
         headers={"x-functions-key": key})
    post({"labels": [{"transaction_id": "tx-s", "is_fraud": False}]}, params={"code": "another-key"})
    events = app_env.labels.events(LabelFilter())
    assert [(e["source"], len(e["key_id"])) for e in events] == [("api", 12), ("chargebacks", 12)]
    assert key not in json.dumps(events, default=str)
    [chargeback] = app_env.labels.events(LabelFilter(source="chargebacks"))
    assert app_env.labels.revoke(LabelFilter(key_id=events[0]["key_id"])) == 1
    assert app_env.transactions.find("tx-s")["label"] is True  # back to the chargeback's label
    assert chargeback["is_fraud"] is True


def test_a_bad_source_is_400_naming_it(app_env):
    status, body = post({"source": "Not Allowed!", "labels": [{"transaction_id": "t", "is_fraud": True}]})
    assert status == 400 and [e["field"] for e in body["errors"]] == ["source"]
