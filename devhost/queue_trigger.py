"""Queue triggers: the storage queue listener of the Functions host (Storage extension 5.x).

Mirrored, with the host's defaults (host.json ``extensions.queues``):

* ``batchSize`` 16 (1..32) messages are fetched per poll and invoked in
  parallel; the next batch is fetched as soon as no more than
  ``newBatchThreshold`` (default ``batchSize // 2``, the Consumption-plan value;
  the host multiplies it by the vCPU count on other plans) are still running.
* Fetched messages are invisible for 10 minutes while they run (the host also
  renews that while a function runs past 5 minutes; devhost does not).
* Success deletes the message. Failure makes it visible again after
  ``visibilityTimeout`` (default 00:00:00) so it is retried, until its dequeue
  count reaches ``maxDequeueCount`` (default 5): then the message text is
  copied unchanged to ``<queue>-poison`` (created if missing) and deleted from
  the queue. A message already dequeued more than ``maxDequeueCount`` times
  goes to the poison queue without running. Queues whose name ends in
  ``-poison`` or is too long for the suffix have no poison queue: as in the
  host, their failed messages are left invisible instead of released.
* ``messageEncoding`` ``base64`` (default) or ``none``. A message that is not
  valid base64 is moved to the poison queue at once, without invoking the
  function: that is what the host's ``MessageDecodingFailed`` handler does
  (it does not count retries for a body that can never decode).
* Polling: an empty queue is polled again after a randomized exponential
  backoff from 100 ms up to ``maxPollingInterval`` (default 1 minute), reset
  to 100 ms once messages are found (the host's
  ``RandomizedExponentialBackoffStrategy``). devhost caps the interval at
  ``max_polling_interval_cap`` (2 s unless told otherwise) so local feedback
  is quick; pass ``None`` for the host's exact behaviour.
* Storage errors (including connection refused) are logged and polling backs
  off and continues; it never stops the poller.

Differences: the host does not create a missing trigger queue (it waits for
it); devhost creates it, which changes nothing for the function. Dynamic
concurrency and visibility renewal are not emulated.
"""
from __future__ import annotations

import binascii
import logging
import os
import random
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage  # the worker's full message (dequeue_count etc.)
from azure.storage.queue import LinearRetry, QueueClient, QueueServiceClient

from .config import DevHostError, ci_get, lookup_setting, parse_timespan
from .functions import LoadedFunction

log = logging.getLogger("devhost")

MIN_POLLING_INTERVAL = 0.1  # QueuePollingIntervals.Minimum
MAX_BATCH_SIZE = 32
RECEIVE_VISIBILITY_SECONDS = 600  # the host's listener hides fetched messages for 10 minutes
POISON_SUFFIX = "-poison"
MAX_QUEUE_NAME_LENGTH = 63
DEFAULT_CONNECTION = "AzureWebJobsStorage"
_BASE64_WHITESPACE = re.compile(r"[ \t\r\n]")
_QUEUE_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


class UndecodableMessage(ValueError):
    """A queue message whose text is not valid for the configured ``messageEncoding``."""


@dataclass(frozen=True)
class QueueOptions:
    """host.json ``extensions.queues``, with the host's defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0  # seconds
    max_polling_interval: float = 60.0  # seconds
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, host_json: Mapping) -> QueueOptions:
        section = ci_get(host_json, "extensions", "queues", default=None) or {}

        def number(key: str, default: int) -> int:
            value = ci_get(section, key, default=default)
            if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
                raise DevHostError(f"host.json extensions.queues.{key} must be a whole number, got {value!r}")
            return int(value)

        batch_size = number("batchSize", 16)
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise DevHostError(f"host.json extensions.queues.batchSize must be 1..{MAX_BATCH_SIZE}, got {batch_size}")
        threshold = number("newBatchThreshold", batch_size // 2)
        max_dequeue = number("maxDequeueCount", 5)
        if max_dequeue < 1:
            raise DevHostError("host.json extensions.queues.maxDequeueCount must not be less than 1")
        visibility = parse_timespan(ci_get(section, "visibilityTimeout", default="00:00:00"),
                                    what="host.json extensions.queues.visibilityTimeout")
        if visibility < 0:
            raise DevHostError("host.json extensions.queues.visibilityTimeout must not be negative")
        # Functions 2.x+ documents a plain number here as milliseconds.
        polling = parse_timespan(ci_get(section, "maxPollingInterval", default="00:01:00"),
                                 what="host.json extensions.queues.maxPollingInterval", number_unit_seconds=0.001)
        if polling < MIN_POLLING_INTERVAL:
            raise DevHostError("host.json extensions.queues.maxPollingInterval must not be less than 00:00:00.100")
        encoding = str(ci_get(section, "messageEncoding", default="base64")).strip().lower()
        if encoding not in ("base64", "none"):
            raise DevHostError(f"host.json extensions.queues.messageEncoding must be base64 or none, got {encoding!r}")
        return cls(batch_size, threshold, max_dequeue, visibility, polling, encoding)


def decode_body(text: str | None, encoding: str) -> bytes:
    """The message body the function receives, from the message text in the queue.

    ``base64`` decodes like .NET ``Convert.FromBase64String`` (whitespace ignored,
    padding required); ``none`` passes the text through as UTF-8.
    """
    text = text or ""
    if encoding == "none":
        return text.encode("utf-8")
    compact = _BASE64_WHITESPACE.sub("", text)
    if not compact.isascii() or len(compact) % 4:
        raise UndecodableMessage("message text is not valid base64: not ASCII or length not a multiple of 4")
    try:
        return binascii.a2b_base64(compact.encode("ascii"), strict_mode=True)
    except binascii.Error as exc:
        raise UndecodableMessage(f"message text is not valid base64: {exc}") from exc


def normalize_queue_name(queue_name: str) -> str:
    """The trigger's queue name lower-cased and checked, as the host does before listening."""
    name = queue_name.strip().lower()
    if not _QUEUE_NAME.match(name):
        raise DevHostError(f"invalid queue name {queue_name!r}: 3-63 letters, digits and single hyphens, "
                           f"starting and ending with a letter or digit")
    return name


def poison_queue_name(queue_name: str) -> str | None:
    """``<queue>-poison``, or None where the host has no poison queue for this queue."""
    if queue_name.endswith(POISON_SUFFIX) or len(queue_name) + len(POISON_SUFFIX) > MAX_QUEUE_NAME_LENGTH:
        return None
    return queue_name + POISON_SUFFIX


class PollingBackoff:
    """The host's ``RandomizedExponentialBackoffStrategy`` for polling an empty queue."""

    RANDOMIZATION = 0.2

    def __init__(self, maximum: float, minimum: float = MIN_POLLING_INTERVAL,
                 uniform: Callable[[float, float], float] = random.uniform):
        self.minimum, self.maximum, self._uniform = minimum, max(minimum, maximum), uniform
        self.current, self._exponent = 0.0, 0

    def next_delay(self, found_messages: bool) -> float:
        """The wait before the next poll; resets to the minimum once messages were found."""
        if found_messages:
            self.current, self._exponent = self.minimum, 1
        elif self.current != self.maximum:
            delay = self.minimum
            if self._exponent > 0:
                delay += self._uniform(1 - self.RANDOMIZATION, 1 + self.RANDOMIZATION) * \
                    2 ** (self._exponent - 1) * self.minimum
            if delay < self.maximum:
                self.current, self._exponent = delay, self._exponent + 1
            else:
                self.current = self.maximum
        return self.current


def queue_service(connection: str | None, settings: Mapping[str, str]) -> QueueServiceClient:
    """A client for the storage account a trigger's ``connection`` names, found as the host finds it.

    ``AzureWebJobs<name>`` is tried before ``<name>`` (the WebJobs prefix rule);
    without a connection string, ``<name>__queueServiceUri`` / ``__serviceUri`` /
    ``__accountName`` select an identity-based connection (DefaultAzureCredential).
    """
    name = connection or DEFAULT_CONNECTION
    options: dict[str, Any] = {
        # Fail fast: the poller has its own backoff (the SDK default waits 15 s, 18 s, 24 s...).
        "retry_policy": LinearRetry(backoff=0.5, random_jitter_range=0.2, retry_total=2),  # type: ignore[arg-type]
        "connection_timeout": 5, "read_timeout": 30,
    }
    if not any(os.environ.get(v) for v in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")):
        # Otherwise requests re-reads proxy variables and ~/.netrc on every queue call.
        from azure.core.pipeline.transport import RequestsTransport

        options["transport"] = RequestsTransport(use_env_settings=False)
    for candidate in (f"AzureWebJobs{name}", name):
        value = lookup_setting(candidate, settings)
        if value:
            try:
                return QueueServiceClient.from_connection_string(value, **options)
            except ValueError as exc:
                raise DevHostError(f"setting {candidate} is not a valid storage connection string: {exc}") from exc
    uri = lookup_setting(f"{name}__queueServiceUri", settings) or lookup_setting(f"{name}__serviceUri", settings)
    account = lookup_setting(f"{name}__accountName", settings)
    if uri or account:
        from azure.identity import DefaultAzureCredential  # only identity-based connections need it

        return QueueServiceClient(uri or f"https://{account}.queue.core.windows.net",
                                  credential=DefaultAzureCredential(), **options)
    raise DevHostError(f"storage connection '{name}' is not configured: set {name} (a connection string, e.g. "
                       f"UseDevelopmentStorage=true) in local.settings.json Values or the environment")


class QueuePoller:
    """Polls one function's queue and invokes it for each message, like the host's QueueListener."""

    def __init__(self, function: LoadedFunction, service: QueueServiceClient, options: QueueOptions,
                 max_polling_interval_cap: float | None = None):
        trigger = function.spec.trigger
        self.function = function
        self.options = options
        self.queue_name = normalize_queue_name(str(trigger.get("queueName") or ""))
        # No encode/decode policies: the raw text is read, decoded per message, and copied as-is to poison.
        self.queue: QueueClient = service.get_queue_client(self.queue_name)
        poison = poison_queue_name(self.queue_name)
        self.poison: QueueClient | None = service.get_queue_client(poison) if poison else None
        polling = options.max_polling_interval
        if max_polling_interval_cap is not None:
            polling = min(polling, max(MIN_POLLING_INTERVAL, max_polling_interval_cap))
        self.polling_interval = polling
        self._backoff = PollingBackoff(polling)
        self._pool = ThreadPoolExecutor(max_workers=options.batch_size + options.new_batch_threshold,
                                        thread_name_prefix=f"queue-{function.spec.name}")
        self._in_flight = 0
        self._in_flight_changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll_forever, name=f"devhost-queue-{function.spec.name}",
                                        daemon=True)
        self._healthy = True

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stopping.set()
        with self._in_flight_changed:
            self._in_flight_changed.notify_all()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling and wait for running invocations (the host drains them too)."""
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._pool.shutdown(wait=True)

    # -- polling loop -----------------------------------------------------------------------

    def _poll_forever(self) -> None:
        queue_exists = False
        found_since_last_delay = False
        while not self._stopping.is_set():
            try:
                if not queue_exists:
                    _create_if_missing(self.queue)
                    queue_exists = True
                batch = list(self.queue.receive_messages(messages_per_page=self.options.batch_size,
                                                         max_messages=self.options.batch_size,
                                                         visibility_timeout=RECEIVE_VISIBILITY_SECONDS))
                self._report_health(None)
            except AzureError as exc:
                queue_exists = False
                self._report_health(exc)
                batch = []
            if not batch:
                delay = self._backoff.next_delay(found_since_last_delay)
                found_since_last_delay = False
                self._stopping.wait(delay)
                continue
            found_since_last_delay = True
            for message in batch:
                with self._in_flight_changed:
                    self._in_flight += 1
                try:
                    self._pool.submit(self._process, message)
                except RuntimeError:  # stopped while a slow poll was still running: it reappears later
                    return
            with self._in_flight_changed:
                while self._in_flight > self.options.new_batch_threshold and not self._stopping.is_set():
                    self._in_flight_changed.wait()

    def _report_health(self, error: Exception | None) -> None:
        if error is None:
            if not self._healthy:
                log.info("Queue '%s' is reachable again; polling resumed", self.queue_name)
            self._healthy = True
        elif self._healthy:
            self._healthy = False
            log.warning("Queue '%s' cannot be polled (%s: %s); backing off and retrying", self.queue_name,
                        type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        else:
            log.debug("Queue '%s' still unreachable: %s", self.queue_name, error)

    # -- one message ------------------------------------------------------------------------

    def _process(self, message) -> None:
        try:
            self._handle(message)
        except AzureError as exc:
            log.warning("Queue '%s': completing message %s failed (%s); it reappears after its visibility "
                        "timeout", self.queue_name, message.id, type(exc).__name__)
        except Exception:  # noqa: BLE001 - a bug here must not kill the pool thread silently
            log.exception("Queue '%s': unexpected error handling message %s", self.queue_name, message.id)
        finally:
            with self._in_flight_changed:
                self._in_flight -= 1
                self._in_flight_changed.notify_all()

    def _handle(self, message) -> None:
        max_dequeue = self.options.max_dequeue_count
        if message.dequeue_count > max_dequeue:
            if self.poison is not None:
                self._move_to_poison(message, f"has been dequeued {message.dequeue_count} times, more than "
                                              f"MaxDequeueCount of {max_dequeue}")
            return
        try:
            body = decode_body(message.content, self.options.message_encoding)
        except UndecodableMessage as exc:
            log.warning("Queue '%s': message %s cannot be decoded (%s)", self.queue_name, message.id, exc)
            if self.poison is not None:
                self._move_to_poison(message, "cannot be decoded")
            return
        outcome = self.function.invoke(QueueMessage(
            id=message.id, body=body, pop_receipt=message.pop_receipt, dequeue_count=message.dequeue_count,
            insertion_time=message.inserted_on, expiration_time=message.expires_on,
            time_next_visible=message.next_visible_on,
        ))
        if outcome.succeeded:
            self._delete(message)
        elif self.poison is None:
            pass  # the host leaves it invisible: no fast infinite retry loop without a poison queue
        elif message.dequeue_count >= max_dequeue:
            self._move_to_poison(message, f"has reached MaxDequeueCount of {max_dequeue}")
        else:
            try:
                self.queue.update_message(message, pop_receipt=message.pop_receipt,
                                          visibility_timeout=int(self.options.visibility_timeout))
            except ResourceNotFoundError:
                pass  # message or queue gone: nothing to release
            except HttpResponseError as exc:
                if exc.status_code != 400:  # 400: pop receipt mismatch, someone else owns it now
                    raise

    def _move_to_poison(self, message, reason: str) -> None:
        assert self.poison is not None
        log.warning("Queue '%s': message %s %s. Moving message to queue '%s'.", self.queue_name, message.id,
                    reason, self.poison.queue_name)
        try:
            self.poison.send_message(message.content)
        except ResourceNotFoundError:
            _create_if_missing(self.poison)
            self.poison.send_message(message.content)
        self._delete(message)

    def _delete(self, message) -> None:
        try:
            self.queue.delete_message(message, pop_receipt=message.pop_receipt)
        except ResourceNotFoundError:
            log.debug("Queue '%s': message %s was already gone", self.queue_name, message.id)
        except HttpResponseError as exc:
            if exc.status_code != 400:
                raise
            log.debug("Queue '%s': message %s pop receipt no longer matches", self.queue_name, message.id)


def _create_if_missing(queue: QueueClient) -> None:
    try:
        queue.create_queue()
    except ResourceExistsError:
        pass
