"""Helpers to stand the app up against real services in tests."""
from __future__ import annotations

import base64
import json
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage

from shared.app import Services, get_services, reset_services
from shared.cli import ensure_resources
from shared.model import new_version
from shared.retraining import package_candidate, train_candidate
from shared.features import DEFAULT_SPEC
from shared.simulator import simulate_for_volume
from shared.training import TrainingParams

SMALL_PARAMS = TrainingParams(n_estimators=20, max_depth=8, n_jobs=1)


def configure_app(monkeypatch, storage: str, database_url: str, suffix: str, create_schema: bool = True,
                  **extra: str) -> Services:
    """Point the process-wide services at the given storage and database (which may be
    deliberately unreachable: then pass ``create_schema=False``)."""
    values = {
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
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    reset_services()
    services = get_services()
    if create_schema:
        ensure_resources(services)
    else:
        services.store.ensure_container()
        services.queue.ensure_exists()
        services.poison_queue.ensure_exists()
    return services


class ModelFactory:
    """One small model trained on simulated history, reusable across tests."""

    def __init__(self, rows: int = 30_000, seed: int = 7):
        self.history = simulate_for_volume(rows, seed=seed, n_days=30, start_date="2026-09-01")
        self.candidate = train_candidate(self.history, DEFAULT_SPEC, SMALL_PARAMS, "max_f1")

    def publish(self, store, promote: bool = True, signing_key: str = "", compiled: bool = True) -> str:
        """Publish the model as a new version (with its ONNX form unless ``compiled`` is False)."""
        version = new_version()
        model_bytes, metadata, files = package_candidate(version, self.candidate, SMALL_PARAMS, "max_f1",
                                                         DEFAULT_SPEC, signing_key)
        if not compiled:
            files, metadata["onnx"] = {}, None
        store.publish(version, model_bytes, metadata, files)
        if promote:
            store.promote(version)
        return version


def http_request(body: Any = None, *, raw: bytes | None = None, content_type: str | None = "application/json",
                 url: str = "/api/predict", method: str = "POST") -> func.HttpRequest:
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"content-type": content_type} if content_type else {}
    return func.HttpRequest(method=method, url=url, headers=headers, params={}, route_params={}, body=data)


def queue_message_from_wire(message) -> QueueMessage:
    """What the Functions host hands the trigger for a message read off the queue:
    with the default base64 messageEncoding, the decoded bytes."""
    return QueueMessage(id=message.id, body=base64.b64decode(message.content),
                        dequeue_count=message.dequeue_count, pop_receipt=message.pop_receipt)


def drain_queue(services: Services, max_messages: int = 10_000) -> list[QueueMessage]:
    """Read (and delete) all messages of the transactions queue, as raw wire content."""
    from azure.storage.queue import QueueClient

    raw = QueueClient.from_connection_string(services.settings.storage_connection,
                                             services.settings.transactions_queue)
    received = []
    while len(received) < max_messages:
        batch = list(raw.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=30))
        if not batch:
            break
        for message in batch:
            received.append(queue_message_from_wire(message))
            raw.delete_message(message)
    return received
