"""Storage clients give up within a stated bound, and predict turns that into 503 + Retry-After.

* Against a SILENT endpoint (accepts the connection, never answers), the queue client predict
  uses and the model container client fail within ``attempts × read_timeout + retries × backoff``
  (a refused port fails at once and proves nothing about timeouts).
* With Azurite frozen (SIGSTOP), predict answers 503 with ``Retry-After`` within
  ``ENQUEUE_TIMEOUT_MS``, the sender thread's own call returns while Azurite is still frozen, and
  after SIGCONT requests succeed again.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid

import pytest

import predict_function
from devhost.azurite import ACCOUNT, ACCOUNT_KEY
from harness.app import configure_app, drain_queue, http_request
from harness.silent import SilentServer
from harness.waiting import wait_for
from shared.config import Settings
from shared.storage.blob import ModelStore
from shared.storage.clients import model_container
from shared.storage.queue import EnqueueFailed
from shared.wiring import Wiring, reset_wiring

# Both clients: 3 attempts (LinearRetry retry_total=2, backoff 0.2 s, no jitter), each waiting at most
# connection_timeout (2 s) to connect and read_timeout (5 s) for the answer. Against a silent endpoint
# the connection is accepted at once, so: 3 × 5 s + 2 × 0.2 s = 15.4 s. Worst case (connect hangs
# too, then the read): 3 × (2 + 5) + 0.4 = 21.4 s. Asserted: under 20 s for the silent endpoint.
SILENT_BOUND_SECONDS = 3 * 5 + 2 * 0.2
LIMIT_SECONDS = 20.0


def silent_settings(port: int) -> Settings:
    endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"
    return Settings(storage_connection=(f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};"
                                        f"AccountKey={ACCOUNT_KEY};BlobEndpoint={endpoint};QueueEndpoint={endpoint};"),
                    transactions_queue="tx-silent", model_container="models-silent")


def timed(call, limit: float) -> tuple[float, BaseException | None]:
    """Run ``call`` in a daemon thread; (seconds it took, what it raised). Fails past ``limit``."""
    outcome: dict = {}

    def run() -> None:
        started = time.monotonic()
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True, name="timed-call")
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still waiting after {limit:g} s: the client's timeouts are not applied"
    return outcome["seconds"], outcome.get("error")


def test_predict_queue_client_gives_up_on_a_silent_endpoint_within_the_bound():
    with SilentServer() as silent:
        services = Wiring(silent_settings(silent.port))
        try:
            seconds, error = timed(lambda: services.queue.send_text("{}"), LIMIT_SECONDS)
        finally:
            services.close()
    print(f"queue client, silent endpoint: failed after {seconds:.2f} s (bound {SILENT_BOUND_SECONDS:.1f} s)")
    assert isinstance(error, EnqueueFailed), error
    assert seconds < LIMIT_SECONDS
    assert len(silent.accepted) == 3  # the three attempts, each waiting out its read timeout


def test_model_container_client_gives_up_on_a_silent_endpoint_within_the_bound():
    with SilentServer() as silent:
        store = ModelStore(model_container(silent_settings(silent.port)))
        seconds, error = timed(store.current_version, LIMIT_SECONDS)
    print(f"model container, silent endpoint: failed after {seconds:.2f} s (bound {SILENT_BOUND_SECONDS:.1f} s)")
    assert error is not None and not isinstance(error, AssertionError), error
    assert seconds < LIMIT_SECONDS
    assert len(silent.accepted) == 3


# --- predict with Azurite frozen ---------------------------------------------------------------

ENQUEUE_BUDGET_SECONDS = 3.0


@pytest.fixture
def frozen_able_azurite(tmp_path):
    """An Azurite of this test's own: freezing the session's one would stall other tests."""
    from harness.servers import ServiceUnavailable, start_azurite
    from tests.conftest import _unavailable

    try:
        server = start_azurite(tmp_path / "azurite")
    except ServiceUnavailable as exc:
        _unavailable("Azurite", exc)
    yield server
    os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


def predict(transaction_id: str):
    body = {"transaction_id": transaction_id, "customer_id": "C1", "terminal_id": "T1", "amount": 12.5}
    started = time.monotonic()
    response = predict_function.main(http_request(body))
    return response, time.monotonic() - started


def test_predict_answers_503_within_the_enqueue_budget_while_azurite_is_frozen_then_recovers(
        frozen_able_azurite, model_factory, tmp_path, monkeypatch):
    services = configure_app(monkeypatch, frozen_able_azurite.connection_string, f"sqlite:///{tmp_path / 'f.db'}",
                             uuid.uuid4().hex[:10], MODEL_REFRESH_SECONDS="600",
                             ENQUEUE_TIMEOUT_MS=str(int(ENQUEUE_BUDGET_SECONDS * 1000)))
    try:
        model_factory.publish(services.store)
        calls = {"started": 0, "finished": 0}
        send_text = services.queue.send_text

        def counted(text: str) -> str:
            calls["started"] += 1
            try:
                return send_text(text)
            finally:
                calls["finished"] += 1

        monkeypatch.setattr(services.queue, "send_text", counted)
        response, _ = predict("warm-up")
        assert response.status_code == 200, response.get_body()

        pid = frozen_able_azurite.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            answers = [predict(f"frozen-{n}") for n in range(2)]
            for response, seconds in answers:
                print(f"predict with Azurite frozen: {response.status_code} after {seconds:.2f} s")
                assert response.status_code == 503, response.get_body()
                assert int(response.headers["Retry-After"]) > 0
                body = json.loads(response.get_body())
                assert body["error"] == "service unavailable" and "transaction_id" in body["message"]
                assert seconds < ENQUEUE_BUDGET_SECONDS + 1.0
            # The sender thread is not wedged: its call gives up while Azurite is still frozen.
            started = time.monotonic()
            wait_for(lambda: calls["finished"] == calls["started"], timeout=LIMIT_SECONDS,
                     what="the sender's queue call returned with Azurite still frozen")
            print(f"sender call returned {time.monotonic() - started:.2f} s after the second 503")
        finally:
            os.kill(pid, signal.SIGCONT)
            thawed = time.monotonic()

        def recovered():
            response, _ = predict("after-thaw")
            return response.status_code == 200

        wait_for(recovered, timeout=30, what="predict answers 200 again after SIGCONT", interval=0.5)
        print(f"predict answered 200 again {time.monotonic() - thawed:.2f} s after SIGCONT")
        queued = [json.loads(m.get_body()) for m in drain_queue(services)]
        ids = [item["transaction_id"] for data in queued for item in data.get("transactions", [data])]
        assert "after-thaw" in ids
    finally:
        reset_wiring()
