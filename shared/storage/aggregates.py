"""Maintenance of the per-bucket aggregates the feature windows read.

Every write here runs inside the caller's database transaction, so a transaction row and
its buckets change together:

* storing new transactions adds them to their card-hour and terminal-day buckets
  (:func:`add_to_buckets`); only rows that were really inserted, so a redelivery counts
  nothing twice;
* a label change moves the row's fraud into or out of its terminal bucket
  (:func:`apply_labels`). ``transactions.fraud_counted`` records what is counted, and the
  conditional UPDATE that flips it is the guard that makes applying idempotent: two
  appliers racing on a row change it once.

A label and its transaction may be committed concurrently, each transaction not seeing
the other; so both writers call :func:`recheck_labels` after committing, and whichever
commits last sees both.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..features import HOURS_PER_DAY
from .engines import upsert_constructor, write_turn
from .schema import customer_buckets, labels, terminal_buckets, transactions

CHUNK = 500  # ids per IN list: under every dialect's parameter limit


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def add_to_buckets(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Add newly stored rows (customer_id, terminal_id, epoch_hour, amount, fraud_counted)."""
    if not rows:
        return
    customer: dict[tuple[str, int], list[float]] = {}
    terminal: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        amount = float(row["amount"])
        key = (row["customer_id"], int(row["epoch_hour"]))
        bucket = customer.get(key)
        if bucket is None:
            customer[key] = [1, amount, amount * amount, amount]
        else:
            bucket[0] += 1
            bucket[1] += amount
            bucket[2] += amount * amount
            bucket[3] = max(bucket[3], amount)
        counts = terminal[(row["terminal_id"], int(row["epoch_hour"]) // HOURS_PER_DAY)]
        counts[0] += 1
        counts[1] += bool(row.get("fraud_counted"))
    # Sorted keys: concurrent writers lock bucket rows in the same order, so never deadlock.
    _upsert_add(conn, customer_buckets, ("customer_id", "hour"), [
        {"customer_id": c, "hour": h, "tx_count": v[0], "amount_sum": v[1], "amount_sumsq": v[2], "amount_max": v[3]}
        for (c, h), v in sorted(customer.items())
    ], additive=("tx_count", "amount_sum", "amount_sumsq"), largest=("amount_max",))
    _upsert_add(conn, terminal_buckets, ("terminal_id", "day"), [
        {"terminal_id": t, "day": d, "tx_count": v[0], "fraud_count": v[1]} for (t, d), v in sorted(terminal.items())
    ], additive=("tx_count", "fraud_count"), largest=())


def _upsert_add(conn: sa.Connection, table: sa.Table, keys: tuple[str, ...], rows: list[dict[str, Any]],
                additive: tuple[str, ...], largest: tuple[str, ...]) -> None:
    """Insert bucket rows, or add to (and take the max with) the stored ones."""
    if not rows:
        return
    upsert = upsert_constructor(conn)
    if upsert is not None:
        statement = upsert(table)
        excluded = statement.excluded
        updates: dict[str, Any] = {name: table.c[name] + excluded[name] for name in additive}
        for name in largest:
            updates[name] = sa.case((excluded[name] > table.c[name], excluded[name]), else_=table.c[name])
        conn.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=updates), rows)
        return
    # SQL Server: update the buckets that exist, insert the others; a concurrent insert of the
    # same new bucket fails the key, and the caller retries the whole transaction.
    existing = _existing_keys(conn, table, keys, rows)
    changes = [row for row in rows if tuple(row[k] for k in keys) in existing]
    inserts = [row for row in rows if tuple(row[k] for k in keys) not in existing]
    if changes:
        values: dict[str, Any] = {name: table.c[name] + sa.bindparam(f"add_{name}") for name in additive}
        for name in largest:
            candidate = sa.bindparam(f"add_{name}", type_=table.c[name].type)
            values[name] = sa.case((candidate > table.c[name], candidate), else_=table.c[name])
        statement = table.update().where(*[table.c[k] == sa.bindparam(f"key_{k}") for k in keys]).values(values)
        conn.execute(statement, [
            {**{f"key_{k}": row[k] for k in keys}, **{f"add_{n}": row[n] for n in (*additive, *largest)}}
            for row in changes
        ])
    if inserts:
        conn.execute(sa.insert(table), inserts)


def _existing_keys(conn: sa.Connection, table: sa.Table, keys: tuple[str, ...],
                   rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    first, second = keys
    found: set[tuple[Any, ...]] = set()
    by_first: dict[Any, list[Any]] = defaultdict(list)
    for row in rows:
        by_first[row[first]].append(row[second])
    names = list(by_first)
    for part in chunks(names, 200):
        query = sa.select(table.c[first], table.c[second]).where(table.c[first].in_(part))
        wanted = {(f, s) for f in part for s in by_first[f]}
        found.update(key for key in map(tuple, conn.execute(query)) if key in wanted)
    return found


def apply_labels(conn: sa.Connection, transaction_ids: Sequence[str]) -> int:
    """Bring the terminal buckets of these transactions in line with their labels in force;
    return how many rows changed. Idempotent; transactions not stored yet are skipped (their
    label is counted when they are stored)."""
    ids = list(dict.fromkeys(transaction_ids))
    if not ids:
        return 0
    t = transactions.c
    is_fraud = sa.exists().where(labels.c.transaction_id == t.transaction_id, labels.c.is_fraud == sa.true())
    deltas: dict[tuple[str, int], int] = defaultdict(int)
    changed = 0
    for part in chunks(ids):
        for new_value, condition in ((True, is_fraud), (False, ~is_fraud)):
            statement = (transactions.update()
                         .where(t.transaction_id.in_(part), t.fraud_counted == (not new_value), condition)
                         .values(fraud_counted=new_value)
                         .returning(t.terminal_id, t.epoch_hour))
            for terminal_id, hour in conn.execute(statement):
                deltas[(terminal_id, hour // HOURS_PER_DAY)] += 1 if new_value else -1
                changed += 1
    rows = [{"key_terminal": k[0], "key_day": k[1], "delta": v} for k, v in sorted(deltas.items()) if v]
    if rows:
        b = terminal_buckets.c
        conn.execute(terminal_buckets.update()
                     .where(b.terminal_id == sa.bindparam("key_terminal"), b.day == sa.bindparam("key_day"))
                     .values(fraud_count=b.fraud_count + sa.bindparam("delta")), rows)
    return changed


def stale_label_ids(conn: sa.Connection, transaction_ids: Sequence[str]) -> list[str]:
    """Of these transactions, those whose counted fraud differs from their label in force."""
    t = transactions.c
    found: list[str] = []
    labeled_fraud = sa.func.coalesce(labels.c.is_fraud, sa.false())
    for part in chunks(list(transaction_ids)):
        query = (sa.select(t.transaction_id)
                 .select_from(transactions.outerjoin(labels, labels.c.transaction_id == t.transaction_id))
                 .where(t.transaction_id.in_(part), t.fraud_counted != labeled_fraud))
        found.extend(conn.execute(query).scalars())
    return found


def settle_labels(engine: Engine, transaction_ids: Sequence[str]) -> int:
    """After a commit: apply labels whose effect on the buckets a concurrent writer's
    transaction could not see. Usually finds nothing, at the cost of one read."""
    with engine.connect() as conn:
        stale = stale_label_ids(conn, transaction_ids)
    if not stale:
        return 0
    with write_turn(engine), engine.begin() as conn:
        return apply_labels(conn, stale)


def rebuild_buckets(conn: sa.Connection) -> None:
    """Recompute every bucket and ``fraud_counted`` from the stored rows and labels, set-based
    (maintenance: after a restore, or to prove the maintained buckets right)."""
    t = transactions.c
    conn.execute(transactions.update().values(fraud_counted=sa.exists().where(
        labels.c.transaction_id == t.transaction_id, labels.c.is_fraud == sa.true())))
    conn.execute(customer_buckets.delete())
    conn.execute(terminal_buckets.delete())
    conn.execute(customer_buckets.insert().from_select(
        ["customer_id", "hour", "tx_count", "amount_sum", "amount_sumsq", "amount_max"],
        sa.select(t.customer_id, t.epoch_hour, sa.func.count(), sa.func.sum(t.amount),
                  sa.func.sum(t.amount * t.amount), sa.func.max(t.amount))
        .group_by(t.customer_id, t.epoch_hour)))
    day = t.epoch_hour // HOURS_PER_DAY
    conn.execute(terminal_buckets.insert().from_select(
        ["terminal_id", "day", "tx_count", "fraud_count"],
        sa.select(t.terminal_id, day, sa.func.count(),
                  sa.func.sum(sa.case((t.fraud_counted == sa.true(), 1), else_=0)))
        .group_by(t.terminal_id, day)))
