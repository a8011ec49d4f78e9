"""The whole loop through the functions' real entry points on real Azurite and SQLite:

request → predict → message on the queue → persist → row in the DB → labels past the
threshold → retrain (timer) → new version published and promoted → predict serves it.
"""
import json
from datetime import datetime, timedelta, timezone

from azure.functions.timer import TimerRequest

import label_function
import persist_function
import predict_function
import retrain_function
from harness.app import SMALL_PARAMS, drain_queue, http_request
from harness.waiting import wait_for
from shared.client import transaction_payload
from shared.operations import import_history, table_counts


def test_request_to_retrained_model(app_with_model, model_factory, monkeypatch):
    services = app_with_model
    first_version = services.store.current_version()
    monkeypatch.setattr(services, "settings", services.settings.__class__(
        **{**services.settings.__dict__, "retrain_threshold": 3000}))
    services.retraining.params = SMALL_PARAMS

    # Older labeled history is already in the database (imported).
    history = model_factory.history.copy()
    import_history(services, history.iloc[:29_000])
    runs_before = len(services.runs.recent())

    # New traffic arrives through the HTTP function, one request per transaction, in real time:
    # the newest part of the simulated history, moved on to the last few hours.
    new = history.iloc[29_000:].copy()
    new["timestamp"] += datetime.now(timezone.utc) - timedelta(minutes=1) - new["timestamp"].max()
    statuses = []
    for row in new.itertuples(index=False):
        response = predict_function.main(http_request(transaction_payload(row)))
        statuses.append(response.status_code)
        assert json.loads(response.get_body())["model_version"] == first_version
    assert set(statuses) == {200}

    # The queue trigger persists every message exactly once (and ignores a redelivery).
    messages = drain_queue(services)
    assert len(messages) == len(new)
    for message in messages + messages[:10]:
        persist_function.main(message)
    assert table_counts(services)["transactions"] == len(history)

    # True labels arrive later, in batches.
    labels = [{"transaction_id": r.transaction_id, "is_fraud": bool(r.label)} for r in new.itertuples()]
    for start in range(0, len(labels), 2000):
        response = label_function.main(http_request({"labels": labels[start:start + 2000]}, url="/api/labels"))
        assert response.status_code == 200

    # The timer fires: enough new labels since the last training run (none yet), so it retrains.
    retrain_function.main(TimerRequest(past_due=False))
    runs = services.runs.recent()
    assert len(runs) == runs_before + 1
    latest = runs[0]
    assert latest["status"] in ("promoted", "rejected"), latest["reason"]
    assert latest["labeled_count"] == len(history)
    assert latest["champion_version"] == first_version and latest["champion_metrics"] is not None
    if latest["status"] == "rejected":
        # The gate did its job; promote by hand to check predict picks up a new version.
        services.store.promote(latest["model_version"], reason="test")
    new_version = services.store.current_version()
    assert new_version == latest["model_version"] != first_version

    # Predict serves the new version without a restart (refresh interval 0 in tests) to new
    # transactions; a replay of an earlier one still gets its first answer.
    first = next(new.itertuples())
    services.models.get()  # the refresh runs in the background: let it land
    wait_for(lambda: services.models.get().version == new_version, 10, "the new version loaded")
    fresh = {**transaction_payload(first), "transaction_id": "after-retrain"}
    response = predict_function.main(http_request(fresh))
    assert json.loads(response.get_body())["model_version"] == new_version
    replay = predict_function.main(http_request(transaction_payload(first)))
    assert json.loads(replay.get_body())["model_version"] == first_version
