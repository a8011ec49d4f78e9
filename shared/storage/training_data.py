"""The training set, read where the data lives: a bounded, deterministic sample of the
labeled population with its window aggregates computed by set-based SQL in chunks.

Memory is bounded by the sample (``TRAINING_MAX_ROWS``), never by the history: rows are
streamed in chunks of ``chunk_rows`` by primary key, and each chunk's aggregates come from
three grouped queries that join the chunk to the bucket tables (and to the card's earlier
rows of the same hour) — the same expressions the online lookup uses
(:mod:`shared.storage.feature_sql`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..features import Aggregate
from . import feature_sql as fsql
from .aggregates import chunks
from .engines import naive_utc
from .schema import SAMPLE_KEY_RANGE, customer_buckets, labels, terminal_buckets, transactions

if TYPE_CHECKING:
    import pandas as pd

ROW_COLUMNS = ("id", "transaction_id", "timestamp", "customer_id", "terminal_id", "amount", "epoch_hour")


TRAIN, GUARD = "train", "guard"
# A fixed hash partition of all transactions (by sample_key) that training never sees: the
# guard set, frozen with each published model, is drawn from it.
GUARD_SHARE = 0.02
GUARD_START = int(SAMPLE_KEY_RANGE * (1 - GUARD_SHARE))


@dataclass(frozen=True)
class Population:
    """The labeled transactions a retrain may learn from: those in the window with a label in
    force (received before ``labeled_before``, when set), plus — when
    ``unlabeled_genuine_before`` is set — unlabeled ones older than it, counted as genuine.
    ``partition`` is the training partition or the guard partition of the hash space."""

    window_start: datetime
    window_end: datetime
    unlabeled_genuine_before: datetime | None = None
    partition: str = TRAIN
    labeled_before: datetime | None = None
    frauds: int = 0
    genuine: int = 0

    @property
    def rows(self) -> int:
        return self.frauds + self.genuine

    def to_dict(self) -> dict[str, Any]:
        return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in asdict(self).items()}


@dataclass(frozen=True)
class SamplePlan:
    """Which share of each class to keep. Every fraud is kept unless frauds alone exceed the
    cap; genuine rows are kept when ``sample_key < rate * 2**31`` (a hash of the id, so a
    rerun keeps the same rows). ``weight`` is how many population rows a kept row stands for."""

    population: Population
    fraud_rate: float
    genuine_rate: float

    @classmethod
    def capped(cls, population: Population, max_rows: int) -> SamplePlan:
        return cls(population, *capped_rates(population.frauds, population.genuine, max_rows))

    def weight(self, is_fraud: np.ndarray) -> np.ndarray:
        return np.where(np.asarray(is_fraud) == 1, 1.0 / self.fraud_rate, 1.0 / self.genuine_rate)

    @property
    def expected_rows(self) -> int:
        return int(round(self.population.frauds * self.fraud_rate + self.population.genuine * self.genuine_rate))

    def to_dict(self) -> dict[str, Any]:
        return {"population": self.population.to_dict(), "fraud_rate": self.fraud_rate,
                "genuine_rate": self.genuine_rate, "expected_rows": self.expected_rows}


def capped_rates(frauds: int, genuine: int, max_rows: int) -> tuple[float, float]:
    """(fraud rate, genuine rate) that keep at most ``max_rows``: every fraud unless frauds
    alone pass half the cap, genuine rows filling the rest."""
    if frauds + genuine <= max_rows:
        return 1.0, 1.0
    fraud_rate = 1.0 if frauds <= max_rows // 2 else (max_rows // 2) / frauds
    genuine_rate = min(1.0, (max_rows - frauds * fraud_rate) / max(genuine, 1))
    return fraud_rate, genuine_rate


def sampled(keys: np.ndarray, is_fraud: np.ndarray, fraud_rate: float = 1.0, genuine_rate: float = 1.0,
            partition: str = TRAIN) -> np.ndarray:
    """Which rows (by their ``sample_key``) a plan with these rates keeps in ``partition`` —
    the same key ranges the SQL sample reads; rates of 1: the whole partition."""
    low, high_fraud = _key_range(partition, fraud_rate)
    high_genuine = _key_range(partition, genuine_rate)[1]
    return (keys >= low) & (keys < np.where(np.asarray(is_fraud) == 1, high_fraud, high_genuine))


def _key_range(partition: str, rate: float) -> tuple[int, int]:
    """The sample_key range [low, high) holding ``rate`` of the partition's rows."""
    low, high = (0, GUARD_START) if partition == TRAIN else (GUARD_START, SAMPLE_KEY_RANGE)
    return low, low + min(high - low, int(np.ceil(rate * (high - low))))


class TrainingData:
    """Reads training populations and samples from the database (possibly a read replica)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # --- the population ---------------------------------------------------------------

    def _label(self, x: Any, label_row: Any) -> Any:
        return sa.case((label_row.c.is_fraud == sa.true(), 1), else_=0)

    def _in_population(self, population: Population, x: Any, label_row: Any) -> Any:
        low, high = _key_range(population.partition, 1.0)
        conditions = [x.c.timestamp >= naive_utc(population.window_start),
                      x.c.timestamp < naive_utc(population.window_end),
                      x.c.sample_key.between(low, high - 1)]  # high may be 2**31: past INTEGER
        labeled = label_row.c.transaction_id.is_not(None)
        if population.labeled_before is not None:
            labeled = sa.and_(labeled, label_row.c.labeled_at < naive_utc(population.labeled_before))
        if population.unlabeled_genuine_before is not None:
            labeled = sa.or_(labeled, sa.and_(label_row.c.transaction_id.is_(None),
                                              x.c.timestamp < naive_utc(population.unlabeled_genuine_before)))
        return sa.and_(*conditions, labeled)

    def _in_sample(self, plan: SamplePlan, x: Any, label_row: Any) -> Any:
        fraud = label_row.c.is_fraud == sa.true()
        partition = plan.population.partition
        keep_fraud = x.c.sample_key <= _key_range(partition, plan.fraud_rate)[1] - 1
        keep_genuine = x.c.sample_key <= _key_range(partition, plan.genuine_rate)[1] - 1
        genuine = sa.or_(label_row.c.is_fraud == sa.false(), label_row.c.is_fraud.is_(None))
        return sa.and_(self._in_population(plan.population, x, label_row),
                       sa.or_(sa.and_(fraud, keep_fraud), sa.and_(genuine, keep_genuine)))

    def population(self, base: Population) -> Population:
        """``base`` with how many frauds and genuine transactions it holds."""
        x, label_row = transactions.alias("x"), labels.alias("l")
        label = self._label(x, label_row)
        query = (sa.select(sa.func.coalesce(sa.func.sum(label), 0), sa.func.count())
                 .select_from(x.outerjoin(label_row, label_row.c.transaction_id == x.c.transaction_id))
                 .where(self._in_population(base, x, label_row)))
        with self.engine.connect() as conn:
            frauds, total = conn.execute(query).one()
        return replace(base, frauds=int(frauds), genuine=int(total) - int(frauds))

    # --- rows with their aggregates ---------------------------------------------------

    def sample(self, plan: SamplePlan, aggregates: list[Aggregate], chunk_rows: int = 20_000,
               on_chunk: Callable[[int], None] | None = None) -> Iterator[pd.DataFrame]:
        """The sampled rows in chunks: row columns, ``label``, ``weight`` and one column per
        aggregate. Chunks follow the primary key; callers sort by time if they need to."""
        x, label_row = transactions.alias("x"), labels.alias("l")
        selection = self._in_sample(plan, x, label_row)
        after = None
        while True:
            query = rows_statement(x, label_row, selection, after, chunk_rows)
            with self.engine.connect() as conn:
                frame = _frame(conn.execute(query))
                if frame.empty:
                    return
                first, last = int(frame["id"].iloc[0]), int(frame["id"].iloc[-1])
                scope = sa.and_(x.c.id.between(first, last), selection)
                values = self._aggregates(conn, aggregates, x, label_row, scope)
            frame = _attach(frame, values, aggregates)
            frame["weight"] = plan.weight(frame["label"].to_numpy())
            after = last
            if on_chunk is not None:
                on_chunk(len(frame))
            yield frame

    def rows_for_ids(self, transaction_ids: Sequence[str], aggregates: list[Aggregate]) -> pd.DataFrame:
        """The stored rows of these transactions with their aggregates and label in force."""
        import pandas as pd

        x, label_row = transactions.alias("x"), labels.alias("l")
        frames = []
        for part in chunks(list(transaction_ids), 400):
            scope = x.c.transaction_id.in_(part)
            query = rows_statement(x, label_row, scope, None, None)
            with self.engine.connect() as conn:
                frame = _frame(conn.execute(query))
                if frame.empty:
                    continue
                values = self._aggregates(conn, aggregates, x, label_row, scope)
            frames.append(_attach(frame, values, aggregates))
        if not frames:
            return _frame(None)
        return pd.concat(frames, ignore_index=True)

    def _aggregates(self, conn: sa.Connection, aggregates: list[Aggregate], x: Any, label_row: Any,
                    scope: Any) -> dict[str, pd.DataFrame]:
        import pandas as pd

        return {str(i): pd.DataFrame(conn.execute(q).mappings().all())
                for i, q in enumerate(aggregate_statements(aggregates, x, label_row, scope))}


def rows_statement(x: Any, label_row: Any, selection: Any, after: int | None, limit: int | None) -> sa.Select:
    """The next chunk of selected rows after primary key ``after``, in key order."""
    query = (sa.select(*[x.c[name] for name in ROW_COLUMNS],
                       sa.case((label_row.c.is_fraud == sa.true(), 1), else_=0).label("label"))
             .select_from(x.outerjoin(label_row, label_row.c.transaction_id == x.c.transaction_id))
             .where(selection, x.c.id > after if after is not None else sa.true()))
    return query.order_by(x.c.id).limit(limit) if limit else query


def aggregate_statements(aggregates: list[Aggregate], x: Any, label_row: Any, scope: Any) -> list[sa.Select]:
    """One grouped query per part, each one row per transaction of ``x`` in ``scope``: the
    card's hour buckets, the card's earlier rows of the same hour, the terminal's day buckets."""
    ref = fsql.Ref(customer_id=x.c.customer_id, terminal_id=x.c.terminal_id, hour=x.c.epoch_hour,
                   day=x.c.epoch_hour // 24, timestamp=x.c.timestamp, transaction_id=x.c.transaction_id)
    base = x.outerjoin(label_row, label_row.c.transaction_id == x.c.transaction_id)
    customer_aggregates, terminal_aggregates = fsql.split(aggregates)
    queries = []
    if customer_aggregates:
        cb = customer_buckets.alias("cb")
        queries.append(sa.select(x.c.id, *fsql.customer_bucket_columns(customer_aggregates, ref, cb))
                       .select_from(base.outerjoin(cb, sa.and_(*fsql.customer_bucket_range(customer_aggregates, ref,
                                                                                               cb))))
                       .where(scope).group_by(x.c.id))
        measures = fsql.partial_measures(customer_aggregates)
        if measures:
            rows = transactions.alias("r")
            queries.append(sa.select(x.c.id, *fsql.partial_columns(measures, rows))
                           .select_from(base.outerjoin(rows, sa.and_(*fsql.partial_range(ref, rows))))
                           .where(scope).group_by(x.c.id))
    if terminal_aggregates:
        tb = terminal_buckets.alias("tb")
        queries.append(sa.select(x.c.id, *fsql.terminal_columns(terminal_aggregates, ref, tb))
                       .select_from(base.outerjoin(tb, sa.and_(*fsql.terminal_range(terminal_aggregates, ref, tb))))
                       .where(scope).group_by(x.c.id))
    return queries


def _frame(result: Any) -> pd.DataFrame:
    import pandas as pd

    columns = [*ROW_COLUMNS, "label"]
    if result is None:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(result.all(), columns=columns)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["amount"] = frame["amount"].astype("float64")
    frame["label"] = frame["label"].astype("int64")
    return frame


def _attach(frame: pd.DataFrame, parts: dict[str, pd.DataFrame], aggregates: list[Aggregate]) -> pd.DataFrame:
    """The row frame with the combined aggregates (see feature_sql.combine) as columns."""
    merged = frame[["id"]]
    for part in parts.values():
        merged = merged.merge(part, on="id", how="left")
    values = {column: merged[column].to_numpy(dtype=np.float64, na_value=np.nan)
              for column in merged.columns if column != "id"}
    combined = fsql.combine(aggregates, values)
    out = frame.copy()
    for name, column in combined.items():
        out[name] = column
    return out
