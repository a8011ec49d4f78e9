"""predict_function through its real entry point, against Azurite and SQLite."""
import json
from datetime import datetime, timedelta, timezone

import pytest

import predict_function
from harness.app import drain_queue, http_request
from shared.schema import parse_scored_message
from shared.usecases.persisting import decode_message

# Scoring is real time: timestamps within PREDICT_MAX_AGE_HOURS of now.
NOW = datetime.now(timezone.utc).replace(microsecond=0)
TX = {"transaction_id": "tx-42", "timestamp": (NOW - timedelta(minutes=5)).isoformat(), "customer_id": "C000001",
      "terminal_id": "T000001", "amount": 57.3}


def call(body=None, **kwargs):
    response = predict_function.main(http_request(body, **kwargs))
    return response.status_code, json.loads(response.get_body())


def test_scores_enqueues_and_answers(app_with_model):
    status, body = call(TX)
    assert status == 200, body
    assert set(body) >= {"transaction_id", "decision", "fraud_probability", "is_fraud", "threshold", "review_threshold",
                         "model_version", "scored_at"}
    assert body["decision"] in ("approve", "review", "decline")
    assert body["is_fraud"] == (body["decision"] == "decline")
    assert body["transaction_id"] == "tx-42" and 0 <= body["fraud_probability"] <= 1
    messages = drain_queue(app_with_model)
    assert len(messages) == 1
    # Decoded exactly as the Functions host does with the default base64 messageEncoding.
    queued = parse_scored_message(json.loads(messages[0].get_body()))
    assert queued.transaction.transaction_id == "tx-42" and queued.model_version == body["model_version"]
    assert queued.fraud_probability == pytest.approx(body["fraud_probability"], abs=1e-6)


def test_large_amount_scores_higher_than_typical(app_with_model):
    _, typical = call({**TX, "transaction_id": "small", "amount": 40.0})
    _, large = call({**TX, "transaction_id": "large", "amount": 900.0})
    # Amounts over 220 are always fraud in the simulated history the model learned from.
    assert large["fraud_probability"] > 10 * typical["fraud_probability"]
    assert large["is_fraud"] == (large["fraud_probability"] >= large["threshold"])


def test_bad_input_is_400_naming_fields_and_nothing_enqueued(app_with_model):
    status, body = call({"amount": -5, "customer_id": "", "surprise": 1})
    assert status == 400
    assert {e["field"] for e in body["errors"]} == {"amount", "customer_id", "terminal_id", "surprise"}
    assert call(raw=b"{}", content_type="text/plain")[0] == 415
    assert call(raw=b"{" + b" " * 70_000 + b"}")[0] == 413
    assert call(raw=b"\xff")[0] == 400
    assert drain_queue(app_with_model) == []


def test_no_model_published_is_503(app_env):
    status, body = call(TX)
    assert status == 503 and "no model" in body["message"]
    assert drain_queue(app_env) == []


def test_queue_failure_is_503_never_200(app_with_model, monkeypatch):
    from azure.storage.queue import QueueClient

    # Point the queue client at a port where nothing listens: the write must fail.
    dead = QueueClient.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=eA==;"
        "QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;", "tx", retry_total=0)
    monkeypatch.setattr(app_with_model.queue, "client", dead)
    status, body = call(TX)
    assert status == 503 and "transaction_id" in body["message"]


def test_history_unreadable_scores_degraded_and_still_enqueues(app_with_model, monkeypatch):
    def broken(transaction, spec):
        raise TimeoutError("database did not answer")

    monkeypatch.setattr(app_with_model.history, "read", broken)
    status, body = call(TX)
    assert status == 200 and body["degraded"] is True
    [message] = drain_queue(app_with_model)
    assert json.loads(message.get_body())["degraded"] is True


def test_concurrent_requests_are_grouped_and_every_one_is_queued_once(app_with_model):
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        return call({**TX, "transaction_id": f"c-{i}"})[0]

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(one, range(64)))
    assert statuses == [200] * 64
    messages = drain_queue(app_with_model)
    queued = [s.transaction.transaction_id for m in messages for s in decode_message(m.get_body())[0]]
    assert sorted(queued) == sorted(f"c-{i}" for i in range(64))
    assert len(messages) <= 64


def test_back_dated_transaction_is_refused(app_with_model):
    status, body = call({**TX, "transaction_id": "old", "timestamp": (NOW - timedelta(hours=30)).isoformat()})
    assert status == 400 and [e["field"] for e in body["errors"]] == ["timestamp"]
    assert drain_queue(app_with_model) == []


def test_replay_returns_the_first_answer_and_conflicts_are_409(app_with_model):
    """The same transaction_id and content: the first answer again (marked replayed), nothing
    queued twice; other content: 409 naming the fields, nothing queued."""
    first = predict_function.main(http_request(TX))
    again = predict_function.main(http_request(TX))
    without_timestamp = predict_function.main(http_request({k: v for k, v in TX.items() if k != "timestamp"}))
    assert first.status_code == again.status_code == without_timestamp.status_code == 200
    assert json.loads(again.get_body()) == json.loads(first.get_body()) == json.loads(without_timestamp.get_body())
    assert again.headers.get("Idempotent-Replayed") == "true" and "Idempotent-Replayed" not in first.headers
    status, body = call({**TX, "amount": 999.0, "terminal_id": "T000002"})
    assert status == 409 and set(body["fields"]) == {"amount", "terminal_id"}
    assert len(drain_queue(app_with_model)) == 1


def test_replay_after_persistence_is_answered_from_the_database(app_with_model):
    """Another instance (no memory of the first answer) reads the stored row."""
    import persist_function
    from shared.usecases.scoring import RecentAnswers

    first = json.loads(predict_function.main(http_request(TX)).get_body())
    for message in drain_queue(app_with_model):
        persist_function.main(message)
    app_with_model.scoring.recent = RecentAnswers()  # a fresh process
    replay = predict_function.main(http_request(TX))
    assert replay.status_code == 200 and json.loads(replay.get_body()) == first
    assert call({**TX, "customer_id": "C999"})[0] == 409
    assert drain_queue(app_with_model) == []
