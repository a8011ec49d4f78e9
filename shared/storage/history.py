"""The online read of the feature history: one transaction against the stored buckets.

A lookup reads at most one bucket row per hour of the card's longest window, one per day of
the terminal's windows, and the card's own transactions of the current hour — the same
whether the terminal is a corner shop or a supermarket chain. It runs on its own engine
(its own connection pool, so slow reads cannot starve writes) under a deadline: a read
that passes ``HISTORY_TIMEOUT_MS`` is cancelled on the server (PostgreSQL
``statement_timeout``; SQLite and SQL Server are interrupted by :class:`CancellableQuery`),
so abandoned queries do not pile up and degradation ends when the load does.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..features import FeatureSpec, epoch_day, epoch_hour
from ..schema import Transaction
from . import feature_sql as fsql
from .engines import CancellableQuery, naive_utc
from .schema import customer_buckets, terminal_buckets, transactions


class HistoryTimeout(TimeoutError):
    """The history could not be read within the deadline (the read was cancelled)."""


@dataclass(frozen=True)
class HistoryRead:
    """A transaction's window aggregates, and its stored row if the id was seen before."""

    aggregates: dict[str, float]
    stored: dict[str, Any] | None


STORED_COLUMNS = ("transaction_id", "timestamp", "customer_id", "terminal_id", "amount", "fraud_probability",
                  "predicted_fraud", "model_version", "scored_at", "degraded", "decision", "review_threshold",
                  "decline_threshold", "rule", "reasons")


@functools.lru_cache(maxsize=16)
def history_statement(spec: FeatureSpec) -> sa.Select:
    """The online aggregate query for ``spec``, built once; per call only parameters change."""
    ref = fsql.Ref(
        customer_id=sa.bindparam("customer_id", type_=sa.String()),
        terminal_id=sa.bindparam("terminal_id", type_=sa.String()),
        hour=sa.bindparam("hour", type_=sa.Integer()),
        day=sa.bindparam("day", type_=sa.Integer()),
        timestamp=sa.bindparam("timestamp", type_=sa.DateTime()),
        transaction_id=sa.bindparam("transaction_id", type_=sa.String()),
    )
    customer_aggregates, terminal_aggregates = fsql.split(spec.aggregates())
    parts = []
    if customer_aggregates:
        cb = customer_buckets.alias("cb")
        parts.append(sa.select(*fsql.customer_bucket_columns(customer_aggregates, ref, cb))
                     .where(*fsql.customer_bucket_range(customer_aggregates, ref, cb)).subquery("customer_part"))
        measures = fsql.partial_measures(customer_aggregates)
        if measures:
            rows = transactions.alias("r")
            parts.append(sa.select(*fsql.partial_columns(measures, rows))
                         .where(*fsql.partial_range(ref, rows)).subquery("current_hour"))
    if terminal_aggregates:
        tb = terminal_buckets.alias("tb")
        parts.append(sa.select(*fsql.terminal_columns(terminal_aggregates, ref, tb))
                     .where(*fsql.terminal_range(terminal_aggregates, ref, tb)).subquery("terminal_part"))
    # One-row aggregates side by side: a deliberate cross join.
    joined: Any = parts[0]
    for part in parts[1:]:
        joined = joined.join(part, sa.true())
    return sa.select(*parts).select_from(joined)


_STORED = sa.select(*[transactions.c[name] for name in STORED_COLUMNS]).where(
    transactions.c.transaction_id == sa.bindparam("transaction_id"))


def parameters(transaction: Transaction) -> dict[str, Any]:
    hour = epoch_hour(transaction.timestamp)
    return {"customer_id": transaction.customer_id, "terminal_id": transaction.terminal_id, "hour": hour,
            "day": epoch_day(hour), "timestamp": naive_utc(transaction.timestamp),
            "transaction_id": transaction.transaction_id}


def read_history(conn: sa.Connection, transaction: Transaction, spec: FeatureSpec,
                 with_stored: bool = True) -> HistoryRead:
    """The aggregates of ``transaction``'s windows (and its stored row) on ``conn``."""
    params = parameters(transaction)
    row = conn.execute(history_statement(spec), params).mappings().one()
    stored = None
    if with_stored:
        found = conn.execute(_STORED, {"transaction_id": transaction.transaction_id}).mappings().first()
        stored = dict(found) if found else None
    return HistoryRead(fsql.combine(spec.aggregates(), dict(row)), stored)


class HistoryReader:
    """Reads histories under a deadline, cancelling what overruns it."""

    def __init__(self, engine: Engine, timeout_ms: int, workers: int = 8):
        self.engine = engine
        self.timeout = timeout_ms / 1000
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="history")

    def read(self, transaction: Transaction, spec: FeatureSpec) -> HistoryRead:
        """The history of one transaction, or :class:`HistoryTimeout` after the deadline."""
        cancellable = CancellableQuery()
        future = self._pool.submit(self._read, transaction, spec, cancellable)
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout:
            future.cancel()  # not started yet: never runs
            cancellable.cancel()  # running: interrupted on the server
            raise HistoryTimeout(f"history not read within {self.timeout * 1000:.0f} ms") from None

    def _read(self, transaction: Transaction, spec: FeatureSpec, cancellable: CancellableQuery) -> HistoryRead:
        try:
            with self.engine.connect() as conn:
                conn.execution_options(cancellable=cancellable)
                return read_history(conn, transaction, spec)
        finally:
            cancellable.finished()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
