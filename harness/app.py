"""Standing the app up against real services: isolated settings, a trained model published
into any container, and the Functions host's request/message objects."""
from __future__ import annotations

import base64
import dataclasses
import json
import os
from datetime import datetime, timedelta, timezone
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage

from shared.cli import ensure_resources
from shared.config import Settings
from shared.features import DEFAULT_SPEC, FeatureSpec
from shared.simulator import simulate_for_volume
from shared.storage.runs import TrainingRun
from shared.training import TrainingParams
from shared.usecases.publishing import Candidate, history_frame, package_candidate, publish_candidate, train_candidate
from shared.usecases.retraining import Retraining, RetrainingSettings
from shared.wiring import Wiring, get_wiring, reset_wiring

SMALL_PARAMS = TrainingParams(n_estimators=20, max_depth=8, n_jobs=1)


def app_settings(storage: str, database_url: str, suffix: str, **extra: str) -> dict[str, str]:
    """Settings of an app isolated from every other: its own queue, container and database."""
    return {
        "AzureWebJobsStorage": storage,
        "TRANSACTIONS_QUEUE": f"tx-{suffix}",
        "MODEL_CONTAINER": f"models-{suffix}",
        "DATABASE_URL": database_url,
        "SQL_CONNECTION_STRING": "",
        "RETRAIN_THRESHOLD": "1000",
        "MODEL_REFRESH_SECONDS": "0",
        "MIN_TRAINING_ROWS": "200",
        "MODEL_SIGNING_KEY": "",
        **extra,
    }


def configure_app(monkeypatch: Any, storage: str, database_url: str, suffix: str, create_schema: bool = True,
                  **extra: str) -> Wiring:
    """Point the process-wide wiring at the given storage and database (which may be
    deliberately unreachable: then pass ``create_schema=False``). ``monkeypatch`` may be
    None (bench and scripts): the environment is then changed for good."""
    for key, value in app_settings(storage, database_url, suffix, **extra).items():
        if monkeypatch is None:
            os.environ[key] = value
        else:
            monkeypatch.setenv(key, value)
    reset_wiring()
    wiring = get_wiring()
    if create_schema:
        ensure_resources(wiring)
    else:
        wiring.store.ensure_container()
        wiring.queue.ensure_exists()
        wiring.poison_queue.ensure_exists()
    return wiring


# What an app served by the dev host as its own process needs besides app_settings: the
# worker runtime, and no retrain timer (retraining is not what those runs measure).
HOSTED_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME": "python",
    "RETRAIN_SCHEDULE": "0 0 0 1 1 *",
    "AzureWebJobs.retrain_function.Disabled": "true",
}


def hosted_settings(storage: str, database_url: str, suffix: str, **extra: str) -> dict[str, str]:
    """:func:`app_settings` of an app the dev host serves as its own process (local.settings.json Values)."""
    return app_settings(storage, database_url, suffix, **{**HOSTED_SETTINGS, **extra})


def prepare_app(values: dict[str, str], factory: ModelFactory | None = None) -> str:
    """Tables, container and queues of the app ``values`` describe, and a model published and
    promoted (``factory``'s, else a small one trained here); returns its version. Nothing in
    this process's environment changes."""
    wiring = Wiring(Settings.from_env(values))
    try:
        ensure_resources(wiring)
        return (factory or ModelFactory()).publish(wiring.store)
    finally:
        wiring.close()


def recent_start(days: int) -> str:
    """The first day of a ``days``-long history that ends yesterday (UTC): inside every
    training window, and labels already old enough to count as matured or delayed."""
    return (datetime.now(timezone.utc) - timedelta(days=days + 1)).date().isoformat()


class ModelFactory:
    """One model trained on simulated history (ending yesterday), publishable into any container."""

    def __init__(self, rows: int = 30_000, seed: int = 7, days: int = 30, start_date: str | None = None,
                 params: TrainingParams = SMALL_PARAMS, spec: FeatureSpec = DEFAULT_SPEC):
        self.params = params
        self.spec = spec
        self.history = simulate_for_volume(rows, seed=seed, n_days=days, start_date=start_date or recent_start(days))
        self.candidate: Candidate = train_candidate(history_frame(self.history, spec.aggregates()), spec, params,
                                                    "max_f1", costs=Settings().costs)

    def publish(self, store: Any, promote: bool = True, signing_key: str = "", compiled: bool = True,
                report: bool = False) -> str:
        """Publish the model as a new version (with its ONNX form unless ``compiled`` is False)."""
        package = package_candidate(self.candidate, self.params, "max_f1", signing_key)
        if not compiled:
            package.files.pop("model.onnx", None)
            package.metadata["onnx"] = None
        if report:
            return publish_candidate(store, package, self.candidate, promote)
        return publish_candidate(store, package, self.candidate, promote, report_builder=None)


def retrain(wiring: Wiring, force: bool = False, trigger: str = "test", params: TrainingParams = SMALL_PARAMS,
            report_builder: Any = None, **settings: Any) -> TrainingRun:
    """The retraining use case on ``wiring``'s stores with small models (and no report unless
    one is given); ``settings`` override RetrainingSettings fields, e.g. ``gate=GateRules(...)``."""
    retraining = Retraining(wiring.labels, wiring.runs, wiring.training_data, wiring.store,
                            dataclasses.replace(RetrainingSettings.from_settings(wiring.settings), **settings),
                            spec=wiring.spec, params=params, report_builder=report_builder)
    return retraining.run(trigger=trigger, force=force)


def http_request(body: Any = None, *, raw: bytes | None = None, content_type: str | None = "application/json",
                 url: str = "/api/predict", method: str = "POST", headers: dict[str, str] | None = None,
                 params: dict[str, str] | None = None) -> func.HttpRequest:
    data = raw if raw is not None else json.dumps(body).encode()
    all_headers = {"content-type": content_type} if content_type else {}
    all_headers.update(headers or {})
    return func.HttpRequest(method=method, url=url, headers=all_headers, params=params or {}, route_params={},
                            body=data)


def queue_message_from_wire(message: Any) -> QueueMessage:
    """What the Functions host hands the trigger for a message read off the queue:
    with the default base64 messageEncoding, the decoded bytes."""
    return QueueMessage(id=message.id, body=base64.b64decode(message.content),
                        dequeue_count=message.dequeue_count, pop_receipt=message.pop_receipt)


def drain_queue(wiring: Wiring, max_messages: int = 10_000) -> list[QueueMessage]:
    """Read (and delete) all messages of the transactions queue, as raw wire content."""
    from azure.storage.queue import QueueClient

    raw = QueueClient.from_connection_string(wiring.settings.storage_connection, wiring.settings.transactions_queue)
    received: list[QueueMessage] = []
    while len(received) < max_messages:
        batch = list(raw.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=30))
        if not batch:
            break
        for message in batch:
            received.append(queue_message_from_wire(message))
            raw.delete_message(message)
    return received
