"""Wiring: build the adapters from settings once per process.

Function entry points and the CLI call :func:`get_services`; tests build their own
:class:`Services` from explicit settings (or call :func:`reset_services`).
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

from azure.storage.queue import LinearRetry as QueueLinearRetry
from sqlalchemy.engine import Engine

from .config import Settings
from .features import DEFAULT_SPEC, FeatureSpec
from .model import ArtifactRejected, LoadedModel, ModelUnavailable
from .storage import db
from .storage.blob import ModelStore
from .storage.clients import model_container, queue_client
from .storage.queue import BatchingSender, TransactionQueue

log = logging.getLogger(__name__)


class ModelCache:
    """The promoted model, loaded once per process and refreshed at most every
    ``refresh_seconds``. If storage is unreachable, or a new version fails
    verification, it keeps serving the last good model."""

    RETRY_WHILE_EMPTY_SECONDS = 1.0

    def __init__(self, store: ModelStore, refresh_seconds: float, clock=time.monotonic):
        self._store = store
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._model: LoadedModel | None = None
        self._checked_at: float | None = None
        self._rejected: set[str] = set()
        self._refreshing = threading.Lock()

    def get(self) -> LoadedModel:
        if self._model is None or self._due():
            # One thread refreshes; the others keep scoring with the model they have. With
            # no model yet they wait for the load in flight instead of failing with 503.
            if self._refreshing.acquire(blocking=self._model is None):
                try:
                    if self._due():
                        self._refresh()
                finally:
                    self._refreshing.release()
        if self._model is None:
            raise ModelUnavailable(
                "no model is available yet: publish one with `python -m shared.cli init` or wait for retraining"
            )
        return self._model

    def _due(self) -> bool:
        if self._checked_at is None:
            return True
        interval = self._refresh_seconds if self._model else self.RETRY_WHILE_EMPTY_SECONDS
        return self._clock() - self._checked_at >= interval

    def _refresh(self) -> None:
        self._checked_at = self._clock()
        current = self._model.version if self._model else None
        try:
            version = self._store.current_version()
        except Exception as exc:
            log.warning("model pointer unreadable (%s); serving %s", type(exc).__name__, current)
            return
        if version is None or version == current or version in self._rejected:
            return
        try:
            self._model = self._store.load(version)
            log.info("model %s loaded (was %s)", version, current)
        except ArtifactRejected as exc:
            self._rejected.add(version)
            log.error("model %s REFUSED: %s; serving %s", version, exc, current)
        except Exception as exc:
            log.warning("model %s could not be loaded (%s); serving %s", version, type(exc).__name__, current)


@dataclass
class Services:
    """Everything the use cases need, built lazily from settings."""

    settings: Settings
    spec: FeatureSpec = DEFAULT_SPEC
    _history_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=8, thread_name_prefix="history"))

    @cached_property
    def engine(self) -> Engine:
        return db.create_db_engine(db.database_url(self.settings.database_url, self.settings.sql_connection_string))

    @cached_property
    def store(self) -> ModelStore:
        return ModelStore(model_container(self.settings), signing_key=self.settings.model_signing_key)

    @cached_property
    def queue(self) -> TransactionQueue:
        # A predict call waits for the enqueue: fail fast (then 503) instead of the SDK's
        # default of ten exponential retries.
        client = queue_client(self.settings, self.settings.transactions_queue,
                              retry_policy=QueueLinearRetry(backoff=0.2, random_jitter_range=0, retry_total=2),
                              connection_timeout=2, read_timeout=5)
        return TransactionQueue(client)

    @cached_property
    def sender(self) -> BatchingSender:
        """Enqueues scored transactions, grouping concurrent requests into one message; a
        predict call waits at most ``ENQUEUE_TIMEOUT_MS`` for its message to be accepted."""
        return BatchingSender(self.queue, timeout=self.settings.enqueue_timeout_ms / 1000)

    @cached_property
    def poison_queue(self) -> TransactionQueue:
        return TransactionQueue(queue_client(self.settings, self.settings.poison_queue))

    @cached_property
    def models(self) -> ModelCache:
        return ModelCache(self.store, self.settings.model_refresh_seconds)

    def history_aggregates(self, transaction) -> dict[str, float]:
        """Stored-history aggregates, or TimeoutError after ``HISTORY_TIMEOUT_MS``."""
        future = self._history_pool.submit(db.history_aggregates, self.engine, transaction, self.spec)
        return future.result(timeout=self.settings.history_timeout_ms / 1000)

    def close(self) -> None:
        self._history_pool.shutdown(wait=False, cancel_futures=True)
        if "engine" in self.__dict__:
            self.engine.dispose()


_services: Services | None = None
_services_lock = threading.Lock()


def get_services() -> Services:
    """The process-wide services, built from the environment on first use."""
    global _services
    if _services is None:
        with _services_lock:
            if _services is None:
                _services = Services(Settings.from_env())
    return _services


def reset_services() -> None:
    """Forget the process-wide services (tests change settings between cases)."""
    global _services
    with _services_lock:
        if _services is not None:
            _services.close()
        _services = None
