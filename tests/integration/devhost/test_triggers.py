"""devhost's queue and timer triggers against a real Azurite, with the throwaway app of conftest.py."""
from __future__ import annotations

import base64
import logging
import time

import requests
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from devhost import FunctionHost

from .conftest import wait_for


def settings_for(app, azurite, **extra) -> dict:
    return {"DevhostTestStorage": azurite.connection_string, "DEVHOST_TEST_QUEUE": app.queue,
            "DEVHOST_TEST_SCHEDULE": "* * * * * *", "DEVHOST_TEST_OUTPUT": str(app.output), **extra}


def queue_client(azurite, name: str, *, encoded: bool = True) -> QueueClient:
    options = {"message_encode_policy": TextBase64EncodePolicy()} if encoded else {}
    return QueueClient.from_connection_string(azurite.connection_string, name, **options)


def queue_is_empty(client: QueueClient) -> bool:
    return client.get_queue_properties().approximate_message_count == 0


def test_queue_messages_are_delivered_and_deleted(full_app, azurite):
    sender = queue_client(azurite, full_app.queue)
    with FunctionHost(full_app.root, settings=settings_for(full_app, azurite), port=0) as host:
        # The host created the queue; the HTTP function of the same app answers meanwhile.
        wait_for(lambda: _exists(sender))
        for n in range(5):
            sender.send_message(f'{{"n": {n}, "text": "héllo"}}')
        lines = wait_for(lambda: len(full_app.lines("queue.log")) >= 5 and full_app.lines("queue.log"))
        assert requests.get(f"{host.base_url}/api/echo", timeout=5).status_code == 200
        wait_for(lambda: queue_is_empty(sender))
    assert sorted(line[0] for line in lines) == sorted(f'{{"n": {n}, "text": "héllo"}}' for n in range(5))
    assert {line[1] for line in lines} == {"1"}  # each delivered once, first try


def test_poison_message_after_exactly_max_dequeue_count_while_good_ones_flow(full_app, azurite):
    sender = queue_client(azurite, full_app.queue)
    poison_reader = queue_client(azurite, f"{full_app.queue}-poison", encoded=False)
    with FunctionHost(full_app.root, settings=settings_for(full_app, azurite), port=0):
        wait_for(lambda: _exists(sender))
        sent = sender.send_message("poison pill")
        for n in range(3):
            sender.send_message(f"good {n}")
        wait_for(lambda: _exists(poison_reader) and poison_reader.peek_messages(max_messages=5))
        wait_for(lambda: {"good 0", "good 1", "good 2"} <= {line[0] for line in full_app.lines("queue.log")})
        time.sleep(1.5)  # give a (wrong) third attempt the chance to show up
        wait_for(lambda: queue_is_empty(sender))
    lines = full_app.lines("queue.log")
    attempts = [line for line in lines if line[0] == "poison pill"]
    assert [a[1] for a in attempts] == ["1", "2"]  # maxDequeueCount is 2 in the test host.json
    assert all(a[2] == sent.id for a in attempts)
    assert sorted(line[0] for line in lines if line[0].startswith("good")) == ["good 0", "good 1", "good 2"]
    poisoned = poison_reader.peek_messages(max_messages=5)
    assert [m.content for m in poisoned] == [base64.b64encode(b"poison pill").decode()]  # copied still encoded


def test_undecodable_message_goes_to_poison_without_running_the_function(full_app, azurite):
    raw_sender = queue_client(azurite, full_app.queue, encoded=False)
    poison_reader = queue_client(azurite, f"{full_app.queue}-poison", encoded=False)
    with FunctionHost(full_app.root, settings=settings_for(full_app, azurite), port=0):
        wait_for(lambda: _exists(raw_sender))
        raw_sender.send_message("this is not base64!")
        queue_client(azurite, full_app.queue).send_message("after it")
        wait_for(lambda: _exists(poison_reader) and poison_reader.peek_messages())
        wait_for(lambda: full_app.lines("queue.log"))
    assert [m.content for m in poison_reader.peek_messages()] == ["this is not base64!"]
    assert [line[0] for line in full_app.lines("queue.log")] == ["after it"]


def test_timer_fires_every_second_without_overlapping(full_app, azurite):
    settings = settings_for(full_app, azurite, DEVHOST_TEST_TIMER_SLEEP="1.3")
    with FunctionHost(full_app.root, settings=settings, port=0) as host:
        assert "schedule '* * * * * *' (UTC)" in "\n".join(host.describe())
        runs = wait_for(lambda: len(full_app.lines("timer.log")) >= 3 and full_app.lines("timer.log"), timeout=20)
    spans = [(float(start), float(end)) for start, end, _ in runs]
    assert all(past_due == "False" for _, _, past_due in runs)
    for (_, previous_end), (next_start, _) in zip(spans, spans[1:]):
        assert next_start >= previous_end  # the 1.3 s runs never overlap although the schedule is every second


def test_timer_fires_on_schedule(full_app, azurite):
    with FunctionHost(full_app.root, settings=settings_for(full_app, azurite), port=0):
        runs = wait_for(lambda: len(full_app.lines("timer.log")) >= 3 and full_app.lines("timer.log"), timeout=10)
    starts = [float(start) for start, _, _ in runs]
    assert all(0.5 < later - earlier < 1.9 for earlier, later in zip(starts, starts[1:]))
    assert all(abs(start - round(start)) < 0.45 for start in starts)  # on the second, as scheduled


def test_poller_survives_a_storage_outage(full_app, azurite, caplog):
    sender = queue_client(azurite, full_app.queue)
    caplog.set_level(logging.INFO, "devhost")
    with FunctionHost(full_app.root, settings=settings_for(full_app, azurite), port=0) as host:
        wait_for(lambda: _exists(sender))
        azurite.stop()
        try:
            time.sleep(2.5)  # several failed polls: connection refused
            assert all(poller._thread.is_alive() for poller in host.pollers)
        finally:
            azurite.start()
        sender.send_message("after the outage")
        wait_for(lambda: [line for line in full_app.lines("queue.log") if line[0] == "after the outage"],
                 timeout=20)
    assert "cannot be polled" in caplog.text and "reachable again" in caplog.text


def _exists(client: QueueClient) -> bool:
    try:
        client.get_queue_properties()
        return True
    except Exception:  # noqa: BLE001 - not created yet
        return False
