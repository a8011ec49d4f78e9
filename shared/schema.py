"""The shape of what comes in: transactions, labels and queue messages.

Every problem is reported by field so a client can fix all of them at once;
nothing here raises anything but :class:`ValidationError`.
"""
from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .errors import ServiceError

# Also the patterns of openapi.json. "(?!\n)" because Python's "$" (unlike ECMA-262's, which
# JSON Schema specifies) also matches before a trailing newline.
ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$(?!\n)")
# Customer and terminal ids are free text, but control characters and lone surrogates
# could not be stored (or logged) safely. Written with \x escapes, which every regex
# dialect reads alike; surrogates cannot be written so and are checked on their own.
TEXT_ID_PATTERN = re.compile(r"^[^\x00-\x1f\x7f-\x9f]{1,64}$(?!\n)")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_AMOUNT = 1_000_000
MAX_REQUEST_BYTES = 64 * 1024
MAX_LABEL_REQUEST_BYTES = 1024 * 1024
MAX_LABELS_PER_REQUEST = 5000
# Card networks allow some clock skew; a transaction from further in the future is a client bug.
MAX_FUTURE_SKEW = timedelta(hours=24)
# Scoring is real time: a timestamp older than this (setting PREDICT_MAX_AGE_HOURS) is refused,
# so nobody can write back-dated history through predict (historic loads go through import).
DEFAULT_MAX_AGE = timedelta(hours=24)
EARLIEST_TIMESTAMP = datetime(2000, 1, 1, tzinfo=timezone.utc)
SOURCE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._:-]{0,31}$(?!\n)")
DEFAULT_LABEL_SOURCE = "api"
DECISIONS = ("approve", "review", "decline")
MAX_REASONS = 10

TRANSACTION_FIELDS = ("transaction_id", "timestamp", "customer_id", "terminal_id", "amount")


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class ValidationError(ServiceError, ValueError):
    """The input is unacceptable; ``status`` is the HTTP status it maps to."""

    def __init__(self, errors: list[FieldError], status: int = 400, message: str = "invalid request"):
        super().__init__(message + ": " + "; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors
        self.status = status
        self.message = message

    def to_body(self) -> dict[str, Any]:
        return {"error": self.message, "errors": [asdict(e) for e in self.errors]}


@dataclass(frozen=True)
class Transaction:
    """A validated card transaction; ``timestamp`` is timezone-aware UTC.

    ``timestamp_given`` is False when the client sent none and the receive time was used:
    a retry of such a request is still the same transaction.
    """

    transaction_id: str
    timestamp: datetime
    customer_id: str
    terminal_id: str
    amount: float
    timestamp_given: bool = True

    def differences(self, other: Transaction) -> list[str]:
        """The fields in which ``other`` (a replay of the same id) differs from this one."""
        fields = [name for name in ("customer_id", "terminal_id", "amount")
                  if getattr(self, name) != getattr(other, name)]
        if self.timestamp_given and other.timestamp_given and self.timestamp != other.timestamp:
            fields.insert(0, "timestamp")
        return fields


@dataclass(frozen=True)
class ScoredTransaction:
    """A transaction with the model's verdict, as carried on the queue."""

    transaction: Transaction
    fraud_probability: float
    is_fraud: bool
    model_version: str
    scored_at: datetime
    degraded: bool = False
    # The decision and why (absent in messages queued by older versions).
    decision: str | None = None
    review_threshold: float | None = None
    decline_threshold: float | None = None
    rule: str | None = None
    reasons: list[dict[str, Any]] | None = None

    def to_message(self) -> dict[str, Any]:
        tx = self.transaction
        message = {
            "transaction_id": tx.transaction_id,
            "timestamp": format_timestamp(tx.timestamp),
            "customer_id": tx.customer_id,
            "terminal_id": tx.terminal_id,
            "amount": tx.amount,
            "fraud_probability": self.fraud_probability,
            "is_fraud": self.is_fraud,
            "model_version": self.model_version,
            "scored_at": format_timestamp(self.scored_at),
            "degraded": self.degraded,
        }
        for name in ("decision", "review_threshold", "decline_threshold", "rule", "reasons"):
            value = getattr(self, name)
            if value is not None:
                message[name] = value
        return message


@dataclass(frozen=True)
class Label:
    """A true outcome (chargeback, investigation) for a transaction."""

    transaction_id: str
    is_fraud: bool


@dataclass(frozen=True)
class LabelBatch:
    """Labels from one label source (chargebacks, an investigation team, the console...)."""

    source: str
    labels: list[Label]


def format_timestamp(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def parse_json_body(body: bytes, content_type: str | None, max_bytes: int = MAX_REQUEST_BYTES) -> Any:
    """Decode a request body as strict JSON (UTF-8, no NaN/Infinity, no duplicate keys)."""
    if content_type:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise ValidationError(
                [FieldError("body", f"content type must be application/json, got {media_type!r}")],
                status=415, message="unsupported media type",
            )
    if len(body) > max_bytes:
        raise ValidationError(
            [FieldError("body", f"body is {len(body)} bytes; the limit is {max_bytes}")],
            status=413, message="payload too large",
        )
    if not body or not body.strip():
        raise ValidationError([FieldError("body", "body is empty; expected a JSON object")])
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError([FieldError("body", f"body is not valid UTF-8 (byte {exc.start})")]) from None
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_pairs_without_duplicates)
    except RecursionError:
        raise ValidationError([FieldError("body", "JSON is nested too deeply")]) from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise ValidationError([FieldError("body", f"malformed JSON: {exc}")]) from None


def _check_id(data: dict[str, Any], name: str, errors: list[FieldError], required: bool,
              pattern: re.Pattern[str] = TEXT_ID_PATTERN) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            errors.append(FieldError(name, "is required"))
        return None
    if not isinstance(value, str):
        errors.append(FieldError(name, f"must be a string, got {type(value).__name__}"))
        return None
    if not 1 <= len(value) <= 64:
        errors.append(FieldError(name, f"must be 1-64 characters, got {len(value)}"))
        return None
    if not pattern.fullmatch(value) or _LONE_SURROGATE.search(value):
        errors.append(FieldError(name, "may contain only letters, digits and . _ : -" if pattern is ID_PATTERN
                                 else "must not contain control characters or unpaired surrogates"))
        return None
    return value


def _check_amount(data: dict[str, Any], errors: list[FieldError]) -> float | None:
    value = data.get("amount")
    if value is None:
        errors.append(FieldError("amount", "is required"))
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        errors.append(FieldError("amount", f"must be a number, got {type(value).__name__}"))
        return None
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(FieldError("amount", "must be a finite number"))
        return None
    if not 0 <= value <= MAX_AMOUNT:
        errors.append(FieldError("amount", f"must be between 0 and {MAX_AMOUNT}"))
        return None
    return float(value)


def parse_timestamp(value: Any) -> datetime:
    """Parse an ISO-8601 date-time that carries a UTC offset; return it in UTC."""
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO-8601 string, got {type(value).__name__}")
    if len(value) > 40:
        raise ValueError("is too long for an ISO-8601 date-time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO-8601 date-time such as 2026-11-23T14:05:00Z") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("must include a UTC offset (e.g. Z or +01:00)")
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-14:00 is past year 9999 in UTC
        raise ValueError("is out of range") from None


def _check_timestamp(data: dict[str, Any], errors: list[FieldError], now: datetime,
                     max_age: timedelta | None) -> datetime | None:
    if data.get("timestamp") is None:
        return now
    try:
        parsed = parse_timestamp(data["timestamp"])
    except ValueError as exc:
        errors.append(FieldError("timestamp", str(exc)))
        return None
    if parsed > now + MAX_FUTURE_SKEW:
        errors.append(FieldError("timestamp", "is too far in the future"))
        return None
    if parsed < EARLIEST_TIMESTAMP:
        errors.append(FieldError("timestamp", "is before 2000-01-01"))
        return None
    if max_age is not None and parsed < now - max_age:
        hours = max_age.total_seconds() / 3600
        errors.append(FieldError("timestamp", f"is more than {hours:g} hours old; scoring is real time "
                                              "(load history with the import command)"))
        return None
    return parsed


def _unknown_fields(data: dict[str, Any], allowed: tuple[str, ...], errors: list[FieldError], prefix: str = "") -> None:
    for name in sorted(set(data) - set(allowed)):
        shown = name if len(name) <= 64 else name[:61] + "..."
        errors.append(FieldError(prefix + shown, "unknown field"))


def validate_transaction(data: Any, now: datetime | None = None,
                         max_age: timedelta | None = DEFAULT_MAX_AGE) -> Transaction:
    """Validate a decoded request; assign a UUID id and receive-time timestamp when absent.
    Timestamps older than ``max_age`` are refused (None: any age, for stored messages)."""
    now = now or datetime.now(timezone.utc)
    if not isinstance(data, dict):
        raise ValidationError([FieldError("body", f"must be a JSON object, got {type(data).__name__}")])
    errors: list[FieldError] = []
    _unknown_fields(data, TRANSACTION_FIELDS, errors)
    transaction_id = _check_id(data, "transaction_id", errors, required=False, pattern=ID_PATTERN)
    timestamp = _check_timestamp(data, errors, now, max_age)
    customer_id = _check_id(data, "customer_id", errors, required=True)
    terminal_id = _check_id(data, "terminal_id", errors, required=True)
    amount = _check_amount(data, errors)
    if errors:
        raise ValidationError(errors)
    # Each check returns None only after recording an error.
    assert timestamp is not None and customer_id is not None and terminal_id is not None and amount is not None
    return Transaction(
        transaction_id=transaction_id or str(uuid.uuid4()),
        timestamp=timestamp,
        customer_id=customer_id,
        terminal_id=terminal_id,
        amount=amount,
        timestamp_given=data.get("timestamp") is not None,
    )


def validate_labels(data: Any) -> LabelBatch:
    """Validate a label batch: ``{"source": "chargebacks", "labels": [{"transaction_id": ...,
    "is_fraud": true}, ...]}`` (``source`` optional, default ``api``)."""
    if not isinstance(data, dict):
        raise ValidationError([FieldError("body", f"must be a JSON object, got {type(data).__name__}")])
    errors: list[FieldError] = []
    _unknown_fields(data, ("labels", "source"), errors)
    source = data.get("source", DEFAULT_LABEL_SOURCE)
    if not isinstance(source, str) or not SOURCE_PATTERN.fullmatch(source):
        errors.append(FieldError("source", "must be 1-32 characters of a-z 0-9 . _ : - starting with a letter "
                                           "or digit"))
    items = data.get("labels")
    if not isinstance(items, list) or not items:
        errors.append(FieldError("labels", "must be a non-empty array"))
        raise ValidationError(errors)
    if len(items) > MAX_LABELS_PER_REQUEST:
        errors.append(FieldError("labels", f"at most {MAX_LABELS_PER_REQUEST} labels per request"))
        raise ValidationError(errors)
    labels: list[Label] = []
    for index, item in enumerate(items):
        where = f"labels[{index}]"
        if not isinstance(item, dict):
            errors.append(FieldError(where, "must be an object"))
            continue
        before = len(errors)
        _unknown_fields(item, ("transaction_id", "is_fraud"), errors, prefix=where + ".")
        item_errors: list[FieldError] = []
        transaction_id = _check_id(item, "transaction_id", item_errors, required=True, pattern=ID_PATTERN)
        errors.extend(FieldError(f"{where}.{e.field}", e.message) for e in item_errors)
        is_fraud = item.get("is_fraud")
        if not isinstance(is_fraud, bool):
            errors.append(FieldError(f"{where}.is_fraud", "is required and must be true or false"))
        if len(errors) == before and transaction_id is not None and isinstance(is_fraud, bool):
            labels.append(Label(transaction_id, is_fraud))
    if errors:
        raise ValidationError(errors)
    return LabelBatch(source, labels)


def parse_scored_message(data: Any) -> ScoredTransaction:
    """Rebuild a queued :class:`ScoredTransaction`; raise ValidationError if the message is malformed."""
    if not isinstance(data, dict):
        raise ValidationError([FieldError("message", "must be a JSON object")], message="malformed message")
    errors: list[FieldError] = []
    transaction = None
    try:
        transaction = validate_transaction(
            {name: data.get(name) for name in TRANSACTION_FIELDS},
            # Queued transactions were validated on receipt; allow them to age in the queue.
            now=datetime.max.replace(tzinfo=timezone.utc) - MAX_FUTURE_SKEW, max_age=None,
        )
        if data.get("transaction_id") is None or data.get("timestamp") is None:
            errors.append(FieldError("transaction_id/timestamp", "must be present in a queued transaction"))
    except ValidationError as exc:
        errors.extend(exc.errors)
    probability = data.get("fraud_probability")
    if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
        errors.append(FieldError("fraud_probability", "must be a number in [0, 1]"))
    if not isinstance(data.get("is_fraud"), bool):
        errors.append(FieldError("is_fraud", "must be true or false"))
    # Every column limit is enforced here: one item a server database cannot store (VARCHAR(64))
    # would otherwise fail the insert of its whole batch.
    model_version = _check_id(data, "model_version", errors, required=True, pattern=ID_PATTERN)
    if not isinstance(data.get("degraded", False), bool):
        errors.append(FieldError("degraded", "must be true or false when present"))
    decision_fields = _check_decision(data, errors)
    scored_at = None
    try:
        scored_at = parse_timestamp(data.get("scored_at"))
    except ValueError as exc:
        errors.append(FieldError("scored_at", str(exc)))
    if errors:
        raise ValidationError(errors, message="malformed message")
    assert transaction is not None and model_version is not None and scored_at is not None  # validated above
    assert isinstance(probability, (int, float))
    return ScoredTransaction(
        transaction=transaction,
        fraud_probability=float(probability),
        is_fraud=data["is_fraud"],
        model_version=model_version,
        scored_at=scored_at,
        degraded=data.get("degraded", False),
        **decision_fields,
    )


def _check_decision(data: dict[str, Any], errors: list[FieldError]) -> dict[str, Any]:
    """The optional decision fields of a queued transaction (older messages have none)."""
    found: dict[str, Any] = {}
    decision = data.get("decision")
    if decision is not None and decision not in DECISIONS:
        errors.append(FieldError("decision", f"must be one of {', '.join(DECISIONS)}"))
    found["decision"] = decision
    for name in ("review_threshold", "decline_threshold"):
        value = data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value <= 1.000001):
            errors.append(FieldError(name, "must be a number in [0, 1]"))
            value = None
        found[name] = float(value) if value is not None else None
    rule = data.get("rule")
    if rule is not None and (not isinstance(rule, str) or not 1 <= len(rule) <= 64):
        errors.append(FieldError("rule", "must be a string of 1-64 characters"))
    found["rule"] = rule
    reasons = data.get("reasons")
    if reasons is not None and (not isinstance(reasons, list) or len(reasons) > MAX_REASONS
                                or not all(isinstance(r, dict) for r in reasons)
                                or len(json.dumps(reasons)) > 4000):
        errors.append(FieldError("reasons", f"must be a list of at most {MAX_REASONS} small objects"))
        reasons = None
    found["reasons"] = reasons
    return found
