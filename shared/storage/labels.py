"""True outcomes: every label received (with its source), the label in force per
transaction, revocation, and expiry of labels whose transaction never arrived."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..schema import Label
from .aggregates import apply_labels, chunks, settle_labels
from .engines import naive_utc, upsert_constructor, utcnow, with_race_retry, write_turn
from .schema import label_events, labels, transactions


@dataclass(frozen=True)
class LabelFilter:
    """Which received labels an operator means: by source, key and/or time received."""

    source: str | None = None
    key_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[Any]:
        e = label_events.c
        found = []
        if self.source is not None:
            found.append(e.source == self.source)
        if self.key_id is not None:
            found.append(e.key_id == self.key_id)
        if self.since is not None:
            found.append(e.received_at >= naive_utc(self.since))
        if self.until is not None:
            found.append(e.received_at < naive_utc(self.until))
        return found


class LabelStore:
    """Labels in the database."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def record(self, batch: Sequence[Label], source: str, key_id: str, received_at: datetime | None = None) -> int:
        """Store labels from one source; a later label for a transaction replaces the earlier
        one (which stays on record and comes back if the later one is revoked)."""
        received_at = naive_utc(received_at) if received_at else utcnow()
        latest = {label.transaction_id: label.is_fraud for label in batch}  # last one in a batch wins
        if not latest:
            return 0
        events = [{"transaction_id": k, "is_fraud": v, "source": source, "key_id": key_id, "received_at": received_at}
                  for k, v in latest.items()]
        in_force = [{"transaction_id": k, "is_fraud": v, "labeled_at": received_at, "source": source, "key_id": key_id}
                    for k, v in latest.items()]

        def write(conn: sa.Connection) -> int:
            for part in chunks(events, 2000):
                conn.execute(sa.insert(label_events), list(part))
            _put_in_force(conn, in_force)
            apply_labels(conn, list(latest))
            return len(latest)

        stored = with_race_retry(self.engine, write)
        settle_labels(self.engine, list(latest))
        return stored

    def labeled_count(self) -> int:
        """Stored transactions with a label in force (labels for unknown ids don't count)."""
        query = sa.select(sa.func.count()).select_from(
            transactions.join(labels, labels.c.transaction_id == transactions.c.transaction_id))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def events(self, which: LabelFilter, limit: int = 100) -> list[dict[str, Any]]:
        """Received labels, newest first."""
        query = (sa.select(label_events).where(*which.conditions())
                 .order_by(label_events.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def summary(self, which: LabelFilter) -> list[dict[str, Any]]:
        """Counts of received labels per source and key (revoked ones apart)."""
        e = label_events.c
        query = (sa.select(e.source, e.key_id, sa.func.count().label("labels"),
                           sa.func.sum(sa.case((e.is_fraud == sa.true(), 1), else_=0)).label("frauds"),
                           sa.func.sum(sa.case((e.revoked_at.is_not(None), 1), else_=0)).label("revoked"),
                           sa.func.min(e.received_at).label("first"), sa.func.max(e.received_at).label("last"))
                 .where(*which.conditions()).group_by(e.source, e.key_id).order_by(e.source, e.key_id))
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def revoke(self, which: LabelFilter, revoked_at: datetime | None = None) -> int:
        """Revoke the matching labels: each affected transaction falls back to its latest
        label not revoked (or none); retraining ignores revoked labels. Returns how many."""
        if not which.conditions():
            raise ValueError("refusing to revoke every label: name a source, key or time range")
        revoked_at = naive_utc(revoked_at) if revoked_at else utcnow()
        e = label_events.c

        def write(conn: sa.Connection) -> tuple[int, list[str]]:
            active = [*which.conditions(), e.revoked_at.is_(None)]
            ids = list(conn.execute(sa.select(e.transaction_id).where(*active).distinct()).scalars())
            count = conn.execute(label_events.update().where(*active).values(revoked_at=revoked_at)).rowcount
            _restore_in_force(conn, ids)
            apply_labels(conn, ids)
            return count, ids

        count, ids = with_race_retry(self.engine, write)
        settle_labels(self.engine, ids)
        return count

    def expire_orphans(self, received_before: datetime) -> int:
        """Delete labels received before ``received_before`` whose transaction was never
        stored: a bound on what label traffic for unknown ids can make the database hold."""
        orphan = ~sa.exists().where(transactions.c.transaction_id == label_events.c.transaction_id)
        cutoff = naive_utc(received_before)
        with write_turn(self.engine), self.engine.begin() as conn:
            deleted = conn.execute(label_events.delete().where(label_events.c.received_at < cutoff, orphan)).rowcount
            orphan_label = ~sa.exists().where(transactions.c.transaction_id == labels.c.transaction_id)
            conn.execute(labels.delete().where(labels.c.labeled_at < cutoff, orphan_label))
        return deleted


def _put_in_force(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    upsert = upsert_constructor(conn)
    if upsert is not None:
        statement = upsert(labels)
        statement = statement.on_conflict_do_update(
            index_elements=["transaction_id"],
            set_={name: statement.excluded[name] for name in ("is_fraud", "labeled_at", "source", "key_id")})
        for part in chunks(rows, 2000):
            conn.execute(statement, list(part))
        return
    present: set[str] = set()
    for part in chunks([r["transaction_id"] for r in rows]):
        present.update(conn.execute(sa.select(labels.c.transaction_id)
                                    .where(labels.c.transaction_id.in_(part))).scalars())
    updates = [{**{f"new_{k}": v for k, v in r.items() if k != "transaction_id"}, "key": r["transaction_id"]}
               for r in rows if r["transaction_id"] in present]
    inserts = [r for r in rows if r["transaction_id"] not in present]
    if updates:
        conn.execute(labels.update().where(labels.c.transaction_id == sa.bindparam("key")).values(
            {name: sa.bindparam(f"new_{name}") for name in ("is_fraud", "labeled_at", "source", "key_id")}), updates)
    if inserts:
        conn.execute(sa.insert(labels), inserts)


def _restore_in_force(conn: sa.Connection, transaction_ids: Sequence[str]) -> None:
    """Make each transaction's label in force its latest one not revoked (or none)."""
    e = label_events.c
    latest: dict[str, dict[str, Any]] = {}
    for part in chunks(list(transaction_ids)):
        query = (sa.select(e.transaction_id, e.is_fraud, e.source, e.key_id, e.received_at)
                 .where(e.transaction_id.in_(part), e.revoked_at.is_(None)).order_by(e.transaction_id, e.id))
        for row in conn.execute(query).mappings():
            latest[row["transaction_id"]] = {"transaction_id": row["transaction_id"], "is_fraud": row["is_fraud"],
                                             "labeled_at": row["received_at"], "source": row["source"],
                                             "key_id": row["key_id"]}
    gone = [i for i in transaction_ids if i not in latest]
    for part in chunks(gone):
        conn.execute(labels.delete().where(labels.c.transaction_id.in_(part)))
    _put_in_force(conn, list(latest.values()))
