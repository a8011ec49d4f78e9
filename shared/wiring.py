"""Wiring: the adapters and use cases, built from settings once per process.

Function entry points and the CLI call :func:`get_wiring`; tests build their own
:class:`Wiring` from explicit settings (or call :func:`reset_wiring`).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from .caches import ModelCache, RuleCache
from .config import Settings
from .features import DEFAULT_SPEC, FeatureSpec
from .storage.blob import ModelStore
from .storage.clients import fail_fast_retry, model_container, queue_client
from .storage.engines import create_db_engine, database_url
from .storage.history import HistoryReader
from .storage.labels import LabelStore
from .storage.queue import BatchingSender, TransactionQueue
from .storage.rules import RuleStore
from .storage.runs import TrainingRunStore
from .storage.training_data import TrainingData
from .storage.transactions import TransactionStore
from .usecases.labeling import Labeling
from .usecases.persisting import Persisting
from .usecases.scoring import Scoring

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient

    from .telemetry import Telemetry
    from .usecases.model_admin import ModelAdmin
    from .usecases.monitoring import Monitoring
    from .usecases.retraining import Retraining


@dataclass
class Wiring:
    """Everything the use cases need, built lazily from settings."""

    settings: Settings
    spec: FeatureSpec = DEFAULT_SPEC

    # --- database -----------------------------------------------------------------------

    @cached_property
    def database_url(self) -> str:
        return database_url(self.settings.database_url, self.settings.sql_connection_string)

    @cached_property
    def engine(self) -> Engine:
        return create_db_engine(self.database_url)

    @cached_property
    def history_engine(self) -> Engine:
        """Feature-history reads get their own pool and a server-side statement timeout."""
        return create_db_engine(self.database_url, statement_timeout_ms=self.settings.history_timeout_ms,
                                pool_size=8)

    @cached_property
    def training_engine(self) -> Engine:
        """Training reads, e.g. from a read replica, so a retrain does not load the primary."""
        url = database_url(self.settings.training_database_url, self.settings.training_sql_connection_string)
        return create_db_engine(url) if url else self.engine

    @cached_property
    def transactions(self) -> TransactionStore:
        return TransactionStore(self.engine)

    @cached_property
    def labels(self) -> LabelStore:
        return LabelStore(self.engine)

    @cached_property
    def runs(self) -> TrainingRunStore:
        return TrainingRunStore(self.engine)

    @cached_property
    def training_data(self) -> TrainingData:
        return TrainingData(self.training_engine)

    @cached_property
    def monitoring_engine(self) -> Engine:
        """The console's reads get their own small pool and a statement deadline."""
        return create_db_engine(self.database_url, statement_timeout_ms=self.settings.monitoring_timeout_ms,
                                pool_size=4)

    @cached_property
    def history(self) -> HistoryReader:
        return HistoryReader(self.history_engine, self.settings.history_timeout_ms)

    # --- storage account ----------------------------------------------------------------

    @cached_property
    def store(self) -> ModelStore:
        return ModelStore(model_container(self.settings), signing_key=self.settings.model_signing_key)

    @cached_property
    def queue(self) -> TransactionQueue:
        # A predict call waits for the enqueue: fail fast (then 503) instead of the SDK's
        # default of ten exponential retries.
        client = queue_client(self.settings, self.settings.transactions_queue,
                              retry_policy=fail_fast_retry("queue", 0.2),
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
    def operator_poison_queue(self) -> QueueClient:
        """The poison queue as raw text (whatever a message holds, it can be shown), failing fast."""
        return queue_client(self.settings, self.settings.poison_queue, message_encode_policy=None,
                            message_decode_policy=None, retry_policy=fail_fast_retry("queue", 0.2),
                            connection_timeout=2, read_timeout=5)

    @cached_property
    def models(self) -> ModelCache:
        return ModelCache(self.store, self.settings.model_refresh_seconds)

    @cached_property
    def rules(self) -> RuleStore:
        return RuleStore(self.engine)

    @cached_property
    def rule_cache(self) -> RuleCache:
        return RuleCache(lambda: [rule for _, rule in self.rules.all()], self.settings.model_refresh_seconds)

    # --- use cases ----------------------------------------------------------------------

    @cached_property
    def scoring(self) -> Scoring:
        return Scoring(self.models, self.history, self.sender, rules=self.rule_cache,
                       policy=self.settings.decision_policy)

    @cached_property
    def persisting(self) -> Persisting:
        return Persisting(self.transactions)

    @cached_property
    def labeling(self) -> Labeling:
        return Labeling(self.labels)

    @cached_property
    def retraining(self) -> Retraining:
        # Training libraries (pandas, scikit-learn) load only where retraining runs, never
        # in predict's cold start.
        from .usecases.retraining import Retraining, RetrainingSettings

        def drift() -> dict:
            report = self.monitoring.drift(cached=False)
            self.telemetry.drift(report)
            return report

        return Retraining(self.labels, self.runs, self.training_data, self.store,
                          RetrainingSettings.from_settings(self.settings), spec=self.spec, drift=drift)

    @cached_property
    def monitoring(self) -> Monitoring:
        """The console's data and the drift of live traffic (pandas loads only when drift is measured)."""
        from .storage.monitoring import MonitoringQueries
        from .usecases.monitoring import Monitoring, MonitoringSettings, StorageQueues

        return Monitoring(MonitoringQueries(self.monitoring_engine, self.settings.monitoring_timeout_ms), self.store,
                          self.training_data, StorageQueues(self.queue.client, self.operator_poison_queue),
                          MonitoringSettings.from_settings(self.settings))

    @cached_property
    def model_admin(self) -> ModelAdmin:
        from .usecases.model_admin import ModelAdmin

        return ModelAdmin(self.store)

    @cached_property
    def telemetry(self) -> Telemetry:
        """Custom metrics to Application Insights, or a no-op without a connection string (then
        the Azure Monitor packages are never imported)."""
        from .telemetry import telemetry_for

        return telemetry_for(self.settings.applicationinsights_connection_string)

    def close(self) -> None:
        if "history" in self.__dict__:
            self.history.close()
        if "monitoring" in self.__dict__:
            self.monitoring.close()
        for name in ("engine", "history_engine", "training_engine", "monitoring_engine"):
            if name in self.__dict__:
                self.__dict__[name].dispose()


_wiring: Wiring | None = None
_wiring_lock = threading.Lock()


def get_wiring() -> Wiring:
    """The process-wide wiring, built from the environment on first use."""
    global _wiring
    if _wiring is None:
        with _wiring_lock:
            if _wiring is None:
                _wiring = Wiring(Settings.from_env())
    return _wiring


def reset_wiring() -> None:
    """Forget the process-wide wiring (tests change settings between cases)."""
    global _wiring
    with _wiring_lock:
        if _wiring is not None:
            _wiring.close()
        _wiring = None
