"""Every model carries its feature definitions: predict computes the features the serving
version was trained with — so a version trained before the code's features changed keeps
serving — and `models rollback` across a feature change works. (The gate scoring a champion
with its own features: tests/unit/test_retraining.py.)"""
import json
from datetime import datetime, timedelta, timezone

import pytest

import persist_function
import predict_function
from harness.app import ModelFactory, drain_queue, http_request
from shared.cli import main as cli
from shared.features import DEFAULT_SPEC, FeatureSpec, features_for_one
from shared.schema import Transaction

# Windows today's default does not have: with the current code's features this model could
# not be scored at all (its feature names do not exist there).
OTHER_SPEC = FeatureSpec(customer_windows=(2, 14), terminal_windows=(3, 21))


@pytest.fixture(scope="module")
def other_factory():
    return ModelFactory(spec=OTHER_SPEC)


def send(body):
    response = predict_function.main(http_request(body))
    assert response.status_code == 200, response.get_body()
    return json.loads(response.get_body())


def with_history(wiring, customer="C-SPEC", terminal="T-SPEC"):
    """Earlier transactions of one card at one terminal, persisted, so its windows hold rows."""
    now = datetime.now(timezone.utc)
    for i in range(6):
        send({"transaction_id": f"h-{customer}-{i}", "customer_id": customer, "terminal_id": terminal,
              "amount": 20.0 + 7 * i, "timestamp": (now - timedelta(minutes=70 - 10 * i)).isoformat()})
    for message in drain_queue(wiring):
        persist_function.main(message)
    return customer, terminal


def expected_probability(wiring, version, body):
    """The score of ``body`` by ``version``, with the features of that version's own spec."""
    model = wiring.store.load(version)
    tx = Transaction(body["transaction_id"], datetime.fromisoformat(body["timestamp"]), body["customer_id"],
                     body["terminal_id"], body["amount"])
    read = wiring.history.read(tx, model.spec)
    return model, model.score(features_for_one(read.aggregates, tx.amount, tx.timestamp, model.spec))


def test_predict_computes_the_features_of_the_serving_version(app_env, other_factory):
    version = other_factory.publish(app_env.store)
    customer, terminal = with_history(app_env)
    body = {"transaction_id": "spec-1", "customer_id": customer, "terminal_id": terminal, "amount": 480.0,
            "timestamp": datetime.now(timezone.utc).isoformat()}
    answer = send(body)
    model, probability = expected_probability(app_env, version, body)
    assert model.spec == OTHER_SPEC and set(model.features) - set(DEFAULT_SPEC.names)
    assert answer["model_version"] == version and "degraded" not in answer
    assert answer["fraud_probability"] == pytest.approx(probability, abs=1e-6)


def test_rollback_across_a_feature_change_serves_the_older_version_with_its_features(
        app_env, other_factory, model_factory):
    older = other_factory.publish(app_env.store)
    newer = model_factory.publish(app_env.store)
    customer, terminal = with_history(app_env)
    now = datetime.now(timezone.utc)
    first = {"transaction_id": "roll-1", "customer_id": customer, "terminal_id": terminal, "amount": 75.0,
             "timestamp": now.isoformat()}
    assert send(first)["model_version"] == newer
    assert cli(["models", "rollback"]) == 0
    assert app_env.store.current_version() == older
    second = {**first, "transaction_id": "roll-2", "timestamp": (now + timedelta(seconds=1)).isoformat()}
    answer = send(second)  # tests refresh the model on every request (MODEL_REFRESH_SECONDS=0)
    assert answer["model_version"] == older
    assert answer["fraud_probability"] == pytest.approx(expected_probability(app_env, older, second)[1], abs=1e-6)
