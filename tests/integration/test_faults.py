"""Holds under faults: nothing lost, nothing stored twice, predict keeps answering.

* The short version of scripts/fault_run.py (same harness: harness.faults): 500 transactions over HTTP through
  the dev host while Azurite (blob + queue) restarts once and PostgreSQL is stopped for a few
  seconds; clients retry 503 / no answer with the same transaction_id. Afterwards every
  transaction that got a 200 is stored exactly once, the queue and the poison queue are empty.
* The database unreachable (refused, or a listener that never answers): predict answers within
  its history budget with ``degraded: true`` and still queues the transaction.
* Blob storage unreachable for the model container only: predict keeps scoring with the model
  it has loaded.
"""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from devhost.azurite import free_port
from harness.app import configure_app
from harness.faults import FaultSchedule, RecordingClient, audit, outage, send_all, transactions
from harness.silent import SilentServer

ROOT = Path(__file__).resolve().parents[2]
HOST_SETTINGS = {"AzureWebJobs.retrain_function.Disabled": "true"}


@pytest.fixture(scope="module")
def postgres_server():
    """A PostgreSQL cluster of this module's own: the fault test stops and starts it."""
    from harness.servers import ServiceUnavailable, start_postgres
    from tests.conftest import _unavailable

    try:
        server = start_postgres()
    except ServiceUnavailable as exc:
        _unavailable("PostgreSQL", exc)
    yield server
    server.stop()


def test_restart_and_database_outage_lose_nothing(azurite, postgres_server, model_factory, monkeypatch):
    import sqlalchemy as sa

    import devhost.queue_trigger
    from devhost import FunctionHost
    from shared.storage.engines import create_db_engine
    from shared.storage.schema import transactions as transactions_table
    from shared.wiring import reset_wiring

    # A message whose delete is cut off by the storage restart comes back after this (the host: 10 min).
    monkeypatch.setattr(devhost.queue_trigger, "RECEIVE_VISIBILITY_SECONDS", 5)
    run_id = "ci" + uuid.uuid4().hex[:8]
    services = configure_app(monkeypatch, azurite.connection_string, postgres_server.url, suffix=run_id,
                             MODEL_REFRESH_SECONDS="600")
    model_factory.publish(services.store)
    items = transactions(500, run_id)
    schedule = FaultSchedule(len(items))
    # The database first: transactions it failed to store are retried (visibilityTimeout 10 s in host.json)
    # while the load and the storage restart go on.
    schedule.at(0.05, "postgresql down 3s", outage(postgres_server.stop_server, postgres_server.start_server, 3.0))
    schedule.at(0.7, "azurite restart", azurite.restart)
    try:
        with FunctionHost(ROOT, settings=HOST_SETTINGS, port=0) as host:
            client = RecordingClient(host.base_url, timeout=10, max_seconds=60, max_backoff=0.5)
            results = send_all(client, items, concurrency=8, on_progress=schedule.progress)
            schedule.join(timeout=60)
            figures = audit(results, azurite.connection_string, services.settings.transactions_queue,
                            postgres_server.url, settle_seconds=60)
    finally:
        reset_wiring()
    print(json.dumps({**figures, "faults": schedule.events}, indent=1))
    assert not schedule.errors, schedule.errors
    assert figures["answers_503"] + figures["no_answer"] > 0, "the storage restart was not noticed by any client"
    assert figures["degraded_200"] > 0, "the database outage was not noticed by predict"
    assert figures["gave_up"] == 0 and figures["ok_200"] == len(items)
    assert figures["persisted"] == len(items)
    assert (figures["lost"], figures["duplicates"], figures["stored_without_200"]) == (0, 0, 0)
    assert (figures["queue_left"], figures["poison"]) == (0, 0)
    engine = create_db_engine(postgres_server.url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(transactions_table)).scalar_one() >= len(items)
    finally:
        engine.dispose()


# --- the database unreachable: degraded, quick, still queued ----------------------------------------

@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_database_unreachable_predict_answers_quickly_degraded_and_queues(azurite, model_factory, monkeypatch,
                                                                         kind):
    from azure.storage.queue import QueueClient

    from devhost import FunctionHost
    from shared.wiring import reset_wiring

    blackhole = SilentServer() if kind == "silent" else None
    port = blackhole.port if blackhole else free_port()
    services = configure_app(monkeypatch, azurite.connection_string,
                             f"postgresql+psycopg://fraud@127.0.0.1:{port}/fraud", uuid.uuid4().hex[:10],
                             create_schema=False, MODEL_REFRESH_SECONDS="600", HISTORY_TIMEOUT_MS="250")
    model_factory.publish(services.store)
    # Only predict: the transactions stay on the queue to be looked at.
    host = FunctionHost(ROOT, settings={**HOST_SETTINGS, "AzureWebJobs.persist_function.Disabled": "true"},
                        port=0).start()
    try:
        answers = []
        for n in range(3):
            started = time.monotonic()
            reply = requests.post(f"{host.base_url}/api/predict", timeout=30, json={
                "transaction_id": f"deg-{kind}-{n}", "customer_id": "C1", "terminal_id": "T1", "amount": 12.5})
            answers.append((reply.status_code, reply.json(), time.monotonic() - started))
    finally:
        if blackhole:
            blackhole.close()  # first: frees the threads stuck connecting to it
        host.stop()
        reset_wiring()
    for status, body, seconds in answers:
        assert status == 200 and body["degraded"] is True, body
        assert seconds < 2.0, f"took {seconds:.2f}s; the history budget is 0.25s"
    reader = QueueClient.from_connection_string(azurite.connection_string, services.settings.transactions_queue)
    queued = [json.loads(base64.b64decode(m.content)) for m in reader.receive_messages(max_messages=32)]
    assert sorted(m["transaction_id"] for m in queued) == [f"deg-{kind}-{n}" for n in range(3)]
    assert all(m["degraded"] is True for m in queued)


# --- blob storage unreachable: the loaded model keeps serving -----------------------------------------

def _dead_container(name: str, **options):
    from azure.storage.blob import ContainerClient

    from devhost.azurite import ACCOUNT, ACCOUNT_KEY

    return ContainerClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{free_port()}/{ACCOUNT};", name, **options)


def test_model_storage_unreachable_predict_keeps_the_loaded_model(app_with_model, caplog):
    """MODEL_REFRESH_SECONDS is 0 here: every request re-reads the pointer and fails to."""
    from devhost import FunctionHost

    services = app_with_model
    version = services.store.current_version()
    with FunctionHost(ROOT, settings=HOST_SETTINGS, port=0) as host:
        url = f"{host.base_url}/api/predict"
        body = {"customer_id": "C1", "terminal_id": "T1", "amount": 12.5}
        assert requests.post(url, json=body, timeout=10).json()["model_version"] == version
        services.store.container = _dead_container(services.settings.model_container, retry_total=0)
        for n in range(5):
            started = time.monotonic()
            reply = requests.post(url, json={**body, "transaction_id": f"blobless-{n}"}, timeout=10)
            assert reply.status_code == 200 and reply.json()["model_version"] == version
            assert time.monotonic() - started < 2.0
    assert "model pointer unreadable" in caplog.text


def test_model_refresh_does_not_hold_a_request_when_blob_storage_is_down(app_with_model):
    from shared.storage.clients import model_container

    services = app_with_model
    assert services.models.get().version == services.store.current_version()
    # The container client exactly as Services.store builds it, aimed at an endpoint where nothing listens.
    settings = services.settings.__class__(**{**services.settings.__dict__, "storage_connection": (
        services.settings.storage_connection.split("BlobEndpoint=")[0]
        + f"BlobEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;")})
    services.store.container = model_container(settings)
    finished = threading.Event()

    def refresh() -> None:
        services.models.get()
        finished.set()

    threading.Thread(target=refresh, daemon=True, name="slow-refresh").start()  # left to finish on its own
    assert finished.wait(3.0), "a model refresh held the request for more than 3 s"
