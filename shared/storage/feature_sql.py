"""The window aggregates of :mod:`shared.features` as SQL, one builder for both uses:

* online: one transaction given as bind parameters (:mod:`shared.storage.history`);
* batch: every row of a chunk of stored training rows, grouped by row
  (:mod:`shared.storage.training_data`).

Each builder takes the transaction's side as expressions (``Ref``), so the bucket ranges,
the measures and the ordering rule are written once. Three parts, each one row per
transaction: the customer's hour buckets, the customer's own rows earlier in the current
hour, and the terminal's day buckets. :func:`combine` merges the customer parts the same
way for both uses (and mirrors the pandas path).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from ..features import ADDITIVE, CUSTOMER, TERMINAL, Aggregate, empty_value
from .schema import customer_buckets, terminal_buckets, transactions

_BUCKET_COLUMN = {"count": "tx_count", "sum": "amount_sum", "sumsq": "amount_sumsq", "max": "amount_max",
                  "frauds": "fraud_count"}
_ROW_MEASURE = {"sum": lambda r: r.amount, "sumsq": lambda r: r.amount * r.amount, "max": lambda r: r.amount}


@dataclass(frozen=True)
class Ref:
    """The transaction whose windows are computed, as SQL expressions."""

    customer_id: Any
    terminal_id: Any
    hour: Any
    day: Any  # hour // 24
    timestamp: Any
    transaction_id: Any


def bucket_name(aggregate: Aggregate) -> str:
    return f"b_{aggregate.name}"


def partial_name(measure: str) -> str:
    return f"p_{measure}"


def _const(value: int) -> Any:
    """An integer of the feature definition, written into the SQL: the statement is built once
    per spec, and binding the ~100 window offsets on every call costs more than the query."""
    return sa.literal_column(str(int(value)), sa.Integer())


ZERO = _const(0)


def _measure(function: str, condition: Any, value: Any, additive: bool) -> Any:
    if additive:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, value), else_=ZERO)), ZERO)
    return getattr(sa.func, function)(sa.case((condition, value), else_=None))


def customer_bucket_columns(aggregates: list[Aggregate], ref: Ref, buckets: Any) -> list[Any]:
    """Per customer aggregate: its measure over the whole hour buckets of its window."""
    columns = []
    for a in aggregates:
        within = buckets.c.hour.between(ref.hour - _const(a.start), ref.hour - _const(max(a.end, 1)))
        column = buckets.c[_BUCKET_COLUMN[a.measure]]
        columns.append(_measure("max", within, column, a.measure in ADDITIVE).label(bucket_name(a)))
    return columns


def customer_bucket_range(aggregates: list[Aggregate], ref: Ref, buckets: Any) -> list[Any]:
    """The join/filter condition: the card's buckets any of the windows can use."""
    return [buckets.c.customer_id == ref.customer_id,
            buckets.c.hour.between(ref.hour - _const(max(a.start for a in aggregates)),
                                   ref.hour - _const(min(max(a.end, 1) for a in aggregates)))]


def partial_measures(aggregates: list[Aggregate]) -> list[str]:
    """The measures needed over the card's rows earlier in the current hour."""
    return sorted({a.measure for a in aggregates if a.end == 0})


def partial_columns(measures: list[str], rows: Any) -> list[Any]:
    """Measures over the card's earlier rows of the hour; NULL-safe under an outer join
    (COUNT of the key, not of the joined row)."""
    columns = []
    for measure in measures:
        expression: Any
        if measure == "count":
            expression = sa.func.count(rows.c.id)
        elif measure == "max":
            expression = sa.func.max(_ROW_MEASURE[measure](rows.c))
        else:
            expression = sa.func.coalesce(sa.func.sum(_ROW_MEASURE[measure](rows.c)), ZERO)
        columns.append(expression.label(partial_name(measure)))
    return columns


def partial_range(ref: Ref, rows: Any) -> list[Any]:
    """The card's rows in the transaction's hour that come before it in (timestamp, id) order."""
    return [rows.c.customer_id == ref.customer_id, rows.c.epoch_hour == ref.hour,
            sa.or_(rows.c.timestamp < ref.timestamp,
                   sa.and_(rows.c.timestamp == ref.timestamp, rows.c.transaction_id < ref.transaction_id))]


def terminal_columns(aggregates: list[Aggregate], ref: Ref, buckets: Any) -> list[Any]:
    columns = []
    for a in aggregates:
        within = buckets.c.day.between(ref.day - _const(a.start), ref.day - _const(a.end))
        if a.measure in ADDITIVE:
            expression = _measure("sum", within, buckets.c[_BUCKET_COLUMN[a.measure]], True)
        else:
            with_fraud = sa.and_(within, buckets.c.fraud_count > ZERO)
            function = "max" if a.measure == "last_fraud_day" else "min"
            expression = _measure(function, with_fraud, buckets.c.day, False)
        columns.append(expression.label(bucket_name(a)))
    return columns


def terminal_range(aggregates: list[Aggregate], ref: Ref, buckets: Any) -> list[Any]:
    return [buckets.c.terminal_id == ref.terminal_id,
            buckets.c.day.between(ref.day - _const(max(a.start for a in aggregates)),
                                  ref.day - _const(min(a.end for a in aggregates)))]


def split(aggregates: list[Aggregate]) -> tuple[list[Aggregate], list[Aggregate]]:
    return ([a for a in aggregates if a.entity == CUSTOMER], [a for a in aggregates if a.entity == TERMINAL])


def combine(aggregates: list[Aggregate], values: Mapping[str, Any]) -> dict[str, Any]:
    """Aggregates from the SQL parts: customer windows that reach the current hour add the
    card's earlier rows of that hour to their whole-hour buckets. Works on scalars (online)
    and on arrays (batch)."""
    result: dict[str, Any] = {}
    for a in aggregates:
        value = values.get(bucket_name(a))
        value = _float(value, a.measure)
        if a.entity == CUSTOMER and a.end == 0:
            partial = _float(values.get(partial_name(a.measure)), a.measure)
            value = np.fmax(value, partial) if a.measure == "max" else value + partial
        result[a.name] = value
    return result


def _float(value: Any, measure: str) -> Any:
    """NULL (no rows) becomes the measure's empty value: 0 for sums, NaN for extremes."""
    empty = empty_value(measure)
    if isinstance(value, np.ndarray):
        values = value.astype(np.float64)
        return np.where(np.isnan(values), empty, values)
    return empty if value is None else float(value)


__all__ = ["Ref", "combine", "customer_bucket_columns", "customer_bucket_range", "partial_columns",
           "partial_measures", "partial_range", "split", "terminal_columns", "terminal_range",
           "customer_buckets", "terminal_buckets", "transactions"]
