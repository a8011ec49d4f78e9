"""Operator rules in the database (the logic is shared/rules.py)."""
from __future__ import annotations

from datetime import timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..rules import AMOUNT_KINDS, Rule
from .engines import naive_utc
from .schema import rules


def _aware(value: Any) -> Any:
    return value.replace(tzinfo=timezone.utc) if value is not None else None


class RuleStore:
    """Rules, each with an id an operator can remove it by."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def add(self, rule: Rule) -> int:
        row = {"kind": rule.kind, "value": str(rule.value), "note": rule.note,
               "created_at": naive_utc(rule.created_at),
               "expires_at": naive_utc(rule.expires_at) if rule.expires_at else None}
        with self.engine.begin() as conn:
            key = conn.execute(sa.insert(rules).values(**row)).inserted_primary_key
        assert key is not None
        return int(key[0])

    def remove(self, rule_id: int) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(rules.delete().where(rules.c.id == rule_id)).rowcount == 1

    def all(self) -> list[tuple[int, Rule]]:
        """Every stored rule with its id, oldest first (expired ones too: they are history)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(rules).order_by(rules.c.id)).mappings().all()
        return [(row["id"], Rule(kind=row["kind"],
                                 value=float(row["value"]) if row["kind"] in AMOUNT_KINDS else row["value"],
                                 created_at=_aware(row["created_at"]), note=row["note"],
                                 expires_at=_aware(row["expires_at"]))) for row in rows]
