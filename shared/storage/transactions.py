"""Stored transactions: idempotent inserts that keep the feature buckets in step, and reads."""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..features import epoch_hour
from ..schema import ScoredTransaction
from .aggregates import add_to_buckets, chunks, settle_labels
from .engines import naive_utc, upsert_constructor, utcnow, with_race_retry
from .schema import labels, sample_key, transactions

log = logging.getLogger(__name__)

# What must match for a replayed transaction_id to be "the same transaction".
CONTENT_FIELDS = ("timestamp", "customer_id", "terminal_id", "amount")


@dataclass(frozen=True)
class AddResult:
    """What storing a batch did: new rows, and ids already stored with different content."""

    inserted: int
    conflicts: list[str]


def transaction_row(transaction_id: str, timestamp: datetime, customer_id: str, terminal_id: str, amount: float,
                    persisted_at: datetime, **scoring: Any) -> dict[str, Any]:
    """A ``transactions`` row with its derived keys (bucket hour, sampling key)."""
    when = naive_utc(timestamp)
    return {"transaction_id": transaction_id, "timestamp": when, "epoch_hour": epoch_hour(when),
            "customer_id": customer_id, "terminal_id": terminal_id, "amount": float(amount),
            "sample_key": sample_key(transaction_id), "persisted_at": persisted_at, **scoring}


def scored_row(scored: ScoredTransaction, persisted_at: datetime) -> dict[str, Any]:
    tx = scored.transaction
    return transaction_row(
        tx.transaction_id, tx.timestamp, tx.customer_id, tx.terminal_id, tx.amount, persisted_at,
        fraud_probability=scored.fraud_probability, predicted_fraud=scored.is_fraud,
        model_version=scored.model_version, scored_at=naive_utc(scored.scored_at), degraded=scored.degraded,
        decision=scored.decision, review_threshold=scored.review_threshold,
        decline_threshold=scored.decline_threshold, rule=scored.rule,
        reasons=json.dumps(scored.reasons) if scored.reasons else None,
    )


class TransactionStore:
    """Transactions in the database, with their feature buckets."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def add_scored(self, batch: Sequence[ScoredTransaction]) -> AddResult:
        """Persist scored transactions in one database transaction (idempotent)."""
        persisted_at = utcnow()
        return self.add_rows([scored_row(scored, persisted_at) for scored in batch])

    def add_rows(self, rows: list[dict[str, Any]]) -> AddResult:
        """Insert rows whose ``transaction_id`` is not stored yet, with their buckets.

        Duplicates (redelivered messages, re-imports) are skipped, not errors; an id stored
        with different content is reported as a conflict and the stored row is kept.
        """
        rows = list({row["transaction_id"]: row for row in rows}.values())  # one row per id
        if not rows:
            return AddResult(0, [])
        result = with_race_retry(self.engine, lambda conn: self._insert(conn, rows))
        # A label committed while we inserted may have been invisible to us: look again.
        settle_labels(self.engine, [row["transaction_id"] for row in rows])
        if result.conflicts:
            log.warning("%d transaction id(s) already stored with different content; stored rows kept: %s",
                        len(result.conflicts), ", ".join(result.conflicts[:5]))
        return result

    def _insert(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> AddResult:
        ids = [row["transaction_id"] for row in rows]
        frauds: set[str] = set()
        for part in chunks(ids):
            frauds.update(conn.execute(sa.select(labels.c.transaction_id).where(
                labels.c.transaction_id.in_(part), labels.c.is_fraud == sa.true())).scalars())
        for row in rows:
            row["fraud_counted"] = row["transaction_id"] in frauds
        upsert = upsert_constructor(conn)
        if upsert is not None:
            statement = (upsert(transactions).on_conflict_do_nothing(index_elements=["transaction_id"])
                         .returning(transactions.c.transaction_id))
            # RETURNING (also with executemany) yields exactly the rows that were inserted.
            new_ids = set(conn.execute(statement, rows[0] if len(rows) == 1 else rows, ).scalars())
        else:  # SQL Server: filter what exists; a lost race fails the key and is retried
            present = self._existing(conn, ids)
            fresh = [row for row in rows if row["transaction_id"] not in present]
            if fresh:
                conn.execute(sa.insert(transactions), fresh)
            new_ids = {row["transaction_id"] for row in fresh}
        new_rows = [row for row in rows if row["transaction_id"] in new_ids]
        add_to_buckets(conn, new_rows)
        conflicts = self._conflicts(conn, [row for row in rows if row["transaction_id"] not in new_ids])
        return AddResult(len(new_rows), conflicts)

    @staticmethod
    def _existing(conn: sa.Connection, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        column = transactions.c.transaction_id
        for part in chunks(list(ids)):
            found.update(conn.execute(sa.select(column).where(column.in_(part))).scalars())
        return found

    @staticmethod
    def _conflicts(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[str]:
        if not rows:
            return []
        t = transactions.c
        wanted = {row["transaction_id"]: row for row in rows}
        conflicts = []
        for part in chunks(list(wanted)):
            stored = conn.execute(sa.select(t.transaction_id, *[t[f] for f in CONTENT_FIELDS])
                                  .where(t.transaction_id.in_(part))).mappings()
            for row in stored:
                if not same_content(row, wanted[row["transaction_id"]]):
                    conflicts.append(row["transaction_id"])
        return conflicts

    def find(self, transaction_id: str) -> dict[str, Any] | None:
        """The stored row with its label in force (``label``: True, False or None)."""
        query = sa.select(transactions, labels.c.is_fraud.label("label")).select_from(
            transactions.outerjoin(labels, labels.c.transaction_id == transactions.c.transaction_id)
        ).where(transactions.c.transaction_id == transaction_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row else None


def same_content(stored: Any, row: dict[str, Any]) -> bool:
    """Whether a stored row and a new one describe the same transaction."""
    return (naive_utc(stored["timestamp"]) == naive_utc(row["timestamp"])
            and stored["customer_id"] == row["customer_id"] and stored["terminal_id"] == row["terminal_id"]
            and float(stored["amount"]) == float(row["amount"]))
