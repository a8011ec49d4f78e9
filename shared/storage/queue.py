"""The transactions queue: scored transactions on their way to the database.

Messages are JSON, base64-encoded by the client (the queue trigger's default). A message
holds one transaction, or ``{"transactions": [...]}`` when several predict calls of one
process were sent together (group commit, see :class:`BatchingSender`).
"""
from __future__ import annotations

import json
import logging
import queue
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from ..errors import EnqueueFailed

log = logging.getLogger(__name__)

BATCH_KEY = "transactions"
MAX_BATCH_ITEMS = 32
# The queue's message limit is 64 KiB after base64 (4/3 growth): stay well under it.
MAX_BATCH_JSON_BYTES = 40_000
# How long send() waits for its message to be accepted (predict: ENQUEUE_TIMEOUT_MS).
DEFAULT_SEND_TIMEOUT = 5.0


def encode_batch(texts: list[str]) -> str:
    """One queue message for already-serialised messages: the message itself when alone,
    else ``{"transactions": [...]}``."""
    if len(texts) == 1:
        return texts[0]
    return '{"' + BATCH_KEY + '":[' + ",".join(texts) + "]}"


class TransactionQueue:
    """Sends JSON messages that the Functions queue trigger decodes with default settings."""

    def __init__(self, client: QueueClient):
        self.client = client

    def ensure_exists(self) -> None:
        try:
            self.client.create_queue()
        except ResourceExistsError:
            pass

    def send_text(self, text: str) -> str:
        """Enqueue one serialised message; return its id. Raises :class:`EnqueueFailed` on any failure."""
        try:
            return self.client.send_message(text).id
        except Exception as exc:  # any transport or service error means "not enqueued"
            raise EnqueueFailed(f"queue {self.client.queue_name}: {type(exc).__name__}") from exc


class BatchingSender:
    """Group commit for concurrent senders: whatever arrives while a send is in flight
    goes out together in the next queue message.

    :meth:`send` returns only once the message holding this item was accepted (or raises
    :class:`EnqueueFailed`), so a caller never reports success for an item not queued.
    With one caller at a time every message holds one item and nothing waits for company.
    """

    def __init__(self, target: TransactionQueue, max_items: int = MAX_BATCH_ITEMS,
                 max_bytes: int = MAX_BATCH_JSON_BYTES, timeout: float = DEFAULT_SEND_TIMEOUT):
        self._target = target
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._pending: queue.SimpleQueue[tuple[str, Future]] = queue.SimpleQueue()
        self._carry: tuple[str, Future] | None = None  # did not fit the last batch: starts the next
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def send(self, message: dict[str, Any], timeout: float | None = None) -> None:
        """Enqueue ``message``; return once it is accepted, else raise EnqueueFailed.

        Waits at most ``timeout`` seconds (default: the sender's). Past it the item is
        withdrawn if the sender has not taken it yet; if it is already in flight it may
        still be queued after the caller was told it was not, which the idempotent
        ``transaction_id`` makes harmless (the client retries with the same id).
        """
        timeout = self._timeout if timeout is None else timeout
        self._ensure_thread()
        done: Future = Future()
        self._pending.put((json.dumps(message, separators=(",", ":")), done))
        try:
            done.result(timeout=timeout)
        except FutureTimeout:
            done.cancel()  # only succeeds while the item still waits: then it is never sent
            raise EnqueueFailed(f"queue {self._queue_name()}: not accepted within {timeout:g} s") from None

    def _queue_name(self) -> str:
        client = getattr(self._target, "client", None)
        return getattr(client, "queue_name", "?")

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._start_lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="queue-sender", daemon=True)
                    self._thread.start()

    def _take(self, item: tuple[str, Future]) -> bool:
        """Claim an item for sending; False when its caller already gave up (timed out)."""
        return item[1].set_running_or_notify_cancel()

    def _next_batch(self) -> list[tuple[str, Future]]:
        first = self._carry
        self._carry = None
        while first is None:
            candidate = self._pending.get()  # wait for work
            first = candidate if self._take(candidate) else None
        batch, size = [first], len(first[0])
        while len(batch) < self._max_items:
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                break
            if not self._take(item):
                continue
            if size + len(item[0]) + 1 > self._max_bytes:
                self._carry = item
                break
            batch.append(item)
            size += len(item[0]) + 1
        return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                self._target.send_text(encode_batch([text for text, _ in batch]))
            except Exception as exc:  # every caller in the batch learns it was not queued
                error = exc if isinstance(exc, EnqueueFailed) else EnqueueFailed(type(exc).__name__)
                for _, done in batch:
                    done.set_exception(error)
                continue
            for _, done in batch:
                done.set_result(None)
