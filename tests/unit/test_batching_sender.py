"""Group commit of queue messages: batching, all-or-nothing acknowledgement, size caps."""
import json
import threading
import time

import pytest

from shared.storage.queue import BATCH_KEY, BatchingSender, EnqueueFailed, encode_batch


class SlowQueue:
    """Records what was sent; each send takes a while, so concurrent callers pile up."""

    def __init__(self, delay=0.02, fail=False):
        self.sent: list[str] = []
        self.delay = delay
        self.fail = fail

    def send_text(self, text: str) -> str:
        time.sleep(self.delay)
        if self.fail:
            raise EnqueueFailed("queue down")
        self.sent.append(text)
        return str(len(self.sent))


def items_of(text: str) -> list[dict]:
    data = json.loads(text)
    return data[BATCH_KEY] if BATCH_KEY in data else [data]


def send_concurrently(sender, count):
    errors = {}

    def one(i):
        try:
            sender.send({"transaction_id": f"t{i}"})
        except EnqueueFailed as exc:
            errors[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_one_caller_sends_one_plain_message_each():
    target = SlowQueue(delay=0)
    sender = BatchingSender(target)
    for i in range(3):
        sender.send({"transaction_id": f"t{i}"})
    assert [json.loads(t) for t in target.sent] == [{"transaction_id": f"t{i}"} for i in range(3)]


def test_concurrent_callers_share_messages_and_every_item_is_sent_once():
    target = SlowQueue()
    assert send_concurrently(BatchingSender(target), 64) == {}
    ids = [item["transaction_id"] for text in target.sent for item in items_of(text)]
    assert sorted(ids) == sorted(f"t{i}" for i in range(64))
    assert len(target.sent) < 64  # grouped
    assert all(len(items_of(text)) <= 32 for text in target.sent)


def test_a_failed_send_fails_every_caller_in_it():
    target = SlowQueue(fail=True)
    errors = send_concurrently(BatchingSender(target), 10)
    assert sorted(errors) == list(range(10))


def test_byte_cap_splits_batches():
    target = SlowQueue()
    sender = BatchingSender(target, max_bytes=200)
    assert send_concurrently(sender, 20) == {}
    assert all(len(text) <= 200 + len('{"transactions":[]}') for text in target.sent)
    assert sum(len(items_of(t)) for t in target.sent) == 20


def test_encode_batch():
    assert encode_batch(['{"a":1}']) == '{"a":1}'
    assert json.loads(encode_batch(['{"a":1}', '{"a":2}'])) == {BATCH_KEY: [{"a": 1}, {"a": 2}]}


def test_sender_survives_a_failure():
    target = SlowQueue(delay=0, fail=True)
    sender = BatchingSender(target)
    with pytest.raises(EnqueueFailed):
        sender.send({"transaction_id": "x"})
    target.fail = False
    sender.send({"transaction_id": "y"})
    assert [json.loads(t) for t in target.sent] == [{"transaction_id": "y"}]


class BlockingQueue:
    """A queue whose send hangs until released (Azurite frozen)."""

    def __init__(self):
        self.release = threading.Event()
        self.sent: list[str] = []

    def send_text(self, text: str) -> str:
        self.release.wait(30)
        self.sent.append(text)
        return "1"


def test_a_send_that_outlasts_its_budget_is_enqueue_failed_and_never_sent_later():
    target = BlockingQueue()
    sender = BatchingSender(target, timeout=0.3)
    failures = {}

    def first():
        try:
            sender.send({"transaction_id": "stuck"})
        except EnqueueFailed as exc:
            failures["stuck"] = exc

    stuck = threading.Thread(target=first)
    stuck.start()
    time.sleep(0.05)  # the sender thread is now inside send_text with "stuck"
    started = time.monotonic()
    with pytest.raises(EnqueueFailed, match="not accepted within 0.3 s"):
        sender.send({"transaction_id": "waiting"})  # queued behind the hung send
    assert time.monotonic() - started < 1.0
    stuck.join(2)
    assert isinstance(failures.get("stuck"), EnqueueFailed)
    target.release.set()
    sender.send({"transaction_id": "later"}, timeout=5)
    # "waiting" timed out before the sender took it: it is dropped, not sent after its caller got a 503.
    sent = [item["transaction_id"] for text in target.sent for item in items_of(text)]
    assert sent == ["stuck", "later"]
