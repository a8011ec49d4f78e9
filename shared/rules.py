"""Operator rules, evaluated before the model: block a card or terminal, trust one, cap amounts.

Kinds and what a matching, unexpired rule decides, in this fixed precedence (first match wins):

1. ``deny_customer``, 2. ``deny_terminal`` (value: an id) → decline. Deny beats allow:
   a card or terminal someone blocked stays blocked whoever trusted it.
3. ``allow_customer``, 4. ``allow_terminal`` (value: an id) → approve, whatever the
   amount rules say: an allow rule is an operator's explicit, reviewable trust decision
   (set ``expires_at`` to bound it). The model still scores the transaction, so allowed
   traffic stays monitored.
5. ``max_amount`` (value: a number) → decline when the amount is above it.
6. ``review_amount`` (value: a number) → review when the amount is above it.

No match: the model decides. Expired rules are ignored at evaluation time, so a loaded
rule set never needs rebuilding for expiry. Lookups are dict and set operations:
evaluating a transaction costs about a microsecond. Pure logic: storage and CLI are
the callers' concern.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, NamedTuple

Decision = Literal["approve", "review", "decline"]

ID_KINDS = ("deny_customer", "deny_terminal", "allow_customer", "allow_terminal")
AMOUNT_KINDS = ("max_amount", "review_amount")
RULE_KINDS = ID_KINDS + AMOUNT_KINDS
MAX_NOTE_CHARS = 500
# The same ids the API accepts (shared/schema.py): 1-64 characters, no control characters.
_ID = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,64}")


class RuleError(ValueError):
    """A rule field is invalid; ``field`` names it, ``message`` says why."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Rule:
    """One operator rule; ``value`` is an id (str) or an amount limit (float)."""

    kind: str
    value: str | float
    created_at: datetime
    note: str | None = None
    expires_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; :meth:`from_dict` reads it back."""
        return {"kind": self.kind, "value": self.value, "note": self.note,
                "created_at": self.created_at.isoformat(),
                "expires_at": self.expires_at.isoformat() if self.expires_at else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """A stored rule. It may have expired since it was made: that is not an error here
        (:class:`RuleSet` ignores it), unlike creating an already expired rule."""
        return _build(data.get("kind"), data.get("value"), data.get("note"), data.get("created_at"),
                      data.get("expires_at"), now=None)


class RuleHit(NamedTuple):  # a tuple: built on the hot path, cheaper than a frozen dataclass
    decision: Decision
    reason: str  # "rule:<kind>", the reason code shown with the decision
    rule: Rule


def parse_rule(kind: Any, value: Any, note: Any = None, expires_at: Any = None, created_at: Any = None,
               now: datetime | None = None) -> Rule:
    """A new rule from operator input; raises :class:`RuleError` naming the bad field.

    ``value`` is an id for the id kinds, a number >= 0 (or its text) for the amount kinds.
    ``expires_at`` / ``created_at``: aware datetimes or ISO-8601 text with a UTC offset;
    ``created_at`` defaults to ``now``, and ``expires_at`` must be later than both.
    """
    now = now or datetime.now(timezone.utc)
    return _build(kind, value, note, now if created_at is None else created_at, expires_at, now=now)


def _build(kind: Any, value: Any, note: Any, created_at: Any, expires_at: Any, now: datetime | None) -> Rule:
    if kind not in RULE_KINDS:
        raise RuleError("kind", f"unknown rule kind {kind!r}; use one of {', '.join(RULE_KINDS)}")
    parsed_value = _id(value) if kind in ID_KINDS else _amount(value)
    if note is not None and not isinstance(note, str):
        raise RuleError("note", f"must be text, got {type(note).__name__}")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise RuleError("note", f"must be at most {MAX_NOTE_CHARS} characters, got {len(note)}")
    created = _instant("created_at", created_at)
    expires = None if expires_at is None else _instant("expires_at", expires_at)
    if expires is not None and now is not None and expires <= now:
        raise RuleError("expires_at", f"is in the past ({expires.isoformat()}): a rule must expire in the future")
    if expires is not None and expires <= created:
        raise RuleError("expires_at", "must be later than created_at")
    return Rule(kind, parsed_value, created, note or None, expires)


def _id(value: Any) -> str:
    if not isinstance(value, str):
        raise RuleError("value", f"must be a customer or terminal id (text), got {type(value).__name__}")
    if not value.strip():
        raise RuleError("value", "must not be empty")
    if not _ID.fullmatch(value):
        raise RuleError("value", "must be 1-64 characters without control characters")
    return value


def _amount(value: Any) -> float:
    if isinstance(value, bool):  # bool is an int to Python, never an amount to an operator
        raise RuleError("value", "must be a number, got a boolean")
    try:
        amount = float(value)
    except (TypeError, ValueError):
        raise RuleError("value", f"must be a number, got {value!r}") from None
    if not math.isfinite(amount):
        raise RuleError("value", "must be a finite number")
    if amount < 0:
        raise RuleError("value", f"must be >= 0, got {amount:g}")
    return amount


def _instant(field: str, value: Any) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise RuleError(field, "must be an ISO-8601 date-time such as 2026-11-23T14:05:00Z") from None
    if not isinstance(value, datetime):
        raise RuleError(field, f"must be a date-time, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise RuleError(field, "must include a UTC offset (e.g. Z or +01:00)")
    return value.astimezone(timezone.utc)


_DECISIONS: dict[str, Decision] = {
    "deny_customer": "decline", "deny_terminal": "decline", "allow_customer": "approve",
    "allow_terminal": "approve", "max_amount": "decline", "review_amount": "review",
}


class RuleSet:
    """Rules indexed for evaluation: ids in dicts, amount limits sorted, kinds in precedence order."""

    def __init__(self, by_id: dict[str, dict[str, Rule]], amount_rules: dict[str, list[Rule]]):
        # Only kinds that have rules are checked: the usual rule set costs a few lookups.
        self._id_checks = tuple((kind.endswith("_customer"), _DECISIONS[kind], "rule:" + kind, by_id[kind])
                                for kind in ID_KINDS if by_id.get(kind))
        self._amount_checks = tuple((_DECISIONS[kind], "rule:" + kind, amount_rules[kind])
                                    for kind in AMOUNT_KINDS if amount_rules.get(kind))
        self._size = sum(map(len, by_id.values())) + sum(map(len, amount_rules.values()))

    @classmethod
    def from_rules(cls, rules: Iterable[Rule]) -> RuleSet:
        by_id: dict[str, dict[str, Rule]] = {kind: {} for kind in ID_KINDS}
        amount_rules: dict[str, list[Rule]] = {kind: [] for kind in AMOUNT_KINDS}
        for rule in rules:
            if rule.kind in AMOUNT_KINDS:
                amount_rules[rule.kind].append(rule)
                continue
            # Of two rules on one id, the one that lasts longer decides.
            key = str(rule.value)  # id rules hold ids
            kept = by_id[rule.kind].get(key)
            if kept is None or _lasts_longer(rule, kept):
                by_id[rule.kind][key] = rule
        for limits in amount_rules.values():
            limits.sort(key=lambda rule: rule.value)
        return cls(by_id, amount_rules)

    def __len__(self) -> int:
        return self._size

    def evaluate(self, transaction: Any, now: datetime | None = None) -> RuleHit | None:
        """The rule decision for a transaction (an object with ``customer_id``,
        ``terminal_id`` and ``amount``, or a mapping with those keys), or None: the model decides."""
        if isinstance(transaction, Mapping):
            customer, terminal, amount = transaction["customer_id"], transaction["terminal_id"], transaction["amount"]
        else:
            customer, terminal, amount = transaction.customer_id, transaction.terminal_id, transaction.amount
        now = now or datetime.now(timezone.utc)
        for on_customer, decision, reason, rules in self._id_checks:
            rule = rules.get(customer if on_customer else terminal)
            if rule is not None and rule.active(now):
                return RuleHit(decision, reason, rule)
        for decision, reason, limits in self._amount_checks:
            for rule in limits:  # lowest limit first
                if amount <= rule.value:
                    break
                if rule.active(now):
                    return RuleHit(decision, reason, rule)
        return None


def _lasts_longer(rule: Rule, other: Rule) -> bool:
    if other.expires_at is None:
        return False
    return rule.expires_at is None or rule.expires_at > other.expires_at
