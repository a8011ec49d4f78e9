"""Use cases: what each function does, independent of how it was triggered."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from .app import Services
from .features import empty_aggregates, features_for_one
from .schema import (
    Label,
    ScoredTransaction,
    Transaction,
    ValidationError,
    format_timestamp,
    parse_scored_message,
)
from .redaction import one_line
from .storage import db
from .storage.queue import BATCH_KEY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """A scored transaction and the threshold its decision was made at."""

    scored: ScoredTransaction
    threshold: float

    def to_response(self) -> dict[str, Any]:
        scored = self.scored
        body = {
            "transaction_id": scored.transaction.transaction_id,
            "fraud_probability": round(scored.fraud_probability, 6),
            "is_fraud": scored.is_fraud,
            "threshold": round(self.threshold, 6),
            "model_version": scored.model_version,
            "scored_at": format_timestamp(scored.scored_at),
        }
        if scored.degraded:
            body["degraded"] = True
        return body


def score_transaction(services: Services, transaction: Transaction) -> Prediction:
    """Score one transaction with the promoted model and enqueue it for persistence.

    Raises ModelUnavailable when no model is loaded and EnqueueFailed when the queue
    did not take the message: a transaction is never answered as scored unless queued.
    If the stored history cannot be read in time, the transaction is scored on its own
    (customer windows hold only itself, terminal windows are empty) and marked degraded.
    """
    model = services.models.get()
    degraded = False
    try:
        aggregates = services.history_aggregates(transaction)
    except Exception as exc:
        log.warning("history unavailable for %s (%s): scoring degraded", transaction.transaction_id,
                    type(exc).__name__)
        aggregates, degraded = empty_aggregates(services.spec), True
    features = features_for_one(aggregates, transaction.amount, transaction.timestamp, services.spec)
    probability = model.score(features)
    scored = ScoredTransaction(
        transaction=transaction,
        fraud_probability=probability,
        is_fraud=probability >= model.threshold,
        model_version=model.version,
        scored_at=datetime.now(timezone.utc),
        degraded=degraded,
    )
    services.sender.send(scored.to_message())
    return Prediction(scored, model.threshold)


class MalformedMessage(ValueError):
    """A queue message that can never be persisted (the host retries it, then poisons it)."""


def decode_message(body: bytes) -> tuple[list[ScoredTransaction], list[str]]:
    """The scored transactions in a queue message (one, or a ``transactions`` batch), and
    the problems of any item that is malformed. Raises MalformedMessage if it is not JSON."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(f"not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise MalformedMessage("JSON nested too deeply") from None
    items = data[BATCH_KEY] if isinstance(data, dict) and isinstance(data.get(BATCH_KEY), list) else [data]
    good: list[ScoredTransaction] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        try:
            good.append(parse_scored_message(item))
        except ValidationError as exc:
            problems.append(f"item {index}: {exc}" if len(items) > 1 else str(exc))
    return good, problems


def persist_message(services: Services, body: bytes) -> int:
    """Insert the queued transactions; return how many were new (0 for a redelivery).

    Valid items are stored even when others are malformed; then MalformedMessage is
    raised so the host retries and finally moves the message to the poison queue, where
    the bad items can be inspected (the stored ones are not inserted twice on retry).
    Database errors propagate for the same retry-then-poison path.
    """
    scored, problems = decode_message(body)
    inserted = db.insert_scored_transactions(services.engine, scored)
    if inserted < len(scored):
        log.info("%d of %d transactions already stored: redelivery ignored", len(scored) - inserted, len(scored))
    if problems:
        raise MalformedMessage(summarize_problems(problems))
    return inserted


MAX_PROBLEMS_SHOWN = 10
MAX_PROBLEM_CHARS = 160
MAX_SUMMARY_CHARS = 1800  # the host logs it in one line: keep that line under ~2 KB
def summarize_problems(problems: list[str], shown: int = MAX_PROBLEMS_SHOWN,
                       limit: int = MAX_SUMMARY_CHARS) -> str:
    """The first ``shown`` problems, each shortened, then "and N more": one bounded line
    however many items of a message are malformed."""
    parts: list[str] = []
    length = 0
    each = max(min(MAX_PROBLEM_CHARS, (limit - 40) // max(shown, 1) - 2), 20)
    for problem in problems[:shown]:
        part = one_line(problem, each)
        if length + len(part) + 2 > limit - 40:  # room for "; and N more"
            break
        parts.append(part)
        length += len(part) + 2
    rest = len(problems) - len(parts)
    return "; ".join(parts + ([f"and {rest} more"] if rest else []))


@dataclass(frozen=True)
class LabelResult:
    received: int
    stored: int


def record_labels(services: Services, labels: list[Label]) -> LabelResult:
    """Store true outcomes. A label for a transaction not persisted yet is kept and
    joins it once the transaction arrives."""
    stored = db.upsert_labels(services.engine, labels)
    return LabelResult(received=len(labels), stored=stored)


# --- history import and simulation ---------------------------------------------------

CSV_COLUMNS = ("transaction_id", "timestamp", "customer_id", "terminal_id", "amount", "label")
IMPORT_CHUNK_ROWS = 50_000


def read_transactions_csv(path: str) -> "pd.DataFrame":
    """Read a labeled history CSV; timestamps without an offset are UTC."""
    import pandas as pd

    frame = pd.read_csv(path, dtype={"transaction_id": str, "customer_id": str, "terminal_id": str})
    missing = [c for c in CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {','.join(CSV_COLUMNS)}")
    timestamps = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    frame["timestamp"] = timestamps
    frame["amount"] = frame["amount"].astype("float64")
    frame["label"] = pd.to_numeric(frame["label"], errors="coerce")
    return frame


def import_history(services: Services, frame: "pd.DataFrame") -> tuple[int, int]:
    """Bulk-load transactions (and their labels, where present); idempotent.

    Returns (new transactions, labels stored).
    """
    import numpy as np
    import pandas as pd

    persisted_at = db.utcnow()
    timestamps = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_localize(None)
    columns = {
        "transaction_id": frame["transaction_id"].astype(str).to_numpy(),
        "timestamp": timestamps.dt.to_pydatetime(),
        "customer_id": frame["customer_id"].astype(str).to_numpy(),
        "terminal_id": frame["terminal_id"].astype(str).to_numpy(),
        "amount": frame["amount"].astype(float).to_numpy(),
    }
    added = 0
    for start in range(0, len(frame), IMPORT_CHUNK_ROWS):
        stop = start + IMPORT_CHUNK_ROWS
        rows = [
            {"transaction_id": i, "timestamp": t, "customer_id": c, "terminal_id": m, "amount": float(a),
             "persisted_at": persisted_at}
            for i, t, c, m, a in zip(*(columns[k][start:stop] for k in
                                       ("transaction_id", "timestamp", "customer_id", "terminal_id", "amount")))
        ]
        added += db.insert_new_rows(services.engine, db.transactions, rows)
    labeled = 0
    if "label" in frame:
        known = frame["label"].notna().to_numpy()
        ids = columns["transaction_id"][known]
        values = frame["label"].to_numpy()[known].astype(np.int64) == 1
        for start in range(0, len(ids), IMPORT_CHUNK_ROWS):
            labeled += db.upsert_labels(services.engine, [
                Label(i, bool(v)) for i, v in zip(ids[start:start + IMPORT_CHUNK_ROWS],
                                                  values[start:start + IMPORT_CHUNK_ROWS])
            ])
    return added, labeled


def enqueue_labeled(services: Services, frame: "pd.DataFrame") -> dict[str, int]:
    """Score and enqueue simulated transactions as the predict function would, and record
    their true labels (the seed's simulate_new_data)."""
    from .storage.queue import EnqueueFailed

    scored = failed = flagged = 0
    labels: list[Label] = []
    for row in frame.itertuples(index=False):
        transaction = Transaction(row.transaction_id, row.timestamp.to_pydatetime(), row.customer_id,
                                  row.terminal_id, float(row.amount))
        try:
            prediction = score_transaction(services, transaction)
        except EnqueueFailed:
            failed += 1
            continue
        scored += 1
        flagged += prediction.scored.is_fraud
        labels.append(Label(row.transaction_id, bool(row.label)))
    record_labels(services, labels)
    return {"enqueued": scored, "failed": failed, "flagged": flagged, "labels": len(labels),
            "true_frauds": int(frame["label"].sum())}


def database_status(services: Services) -> dict[str, Any]:
    """What db-check reports: dialect, server version, driver, row counts — or why not."""
    import sqlalchemy as sa

    url = db.database_url(services.settings.database_url, services.settings.sql_connection_string)
    status: dict[str, Any] = {"url": db.redact_url(url), "reachable": False}
    try:
        engine = services.engine
        status["dialect"] = engine.dialect.name
        status["driver"] = engine.dialect.driver
        with engine.connect() as conn:
            status["server_version"] = ".".join(map(str, engine.dialect.server_version_info or ()))
            conn.execute(sa.text("SELECT 1"))
        status["reachable"] = True
        db.create_schema(engine)
        status["row_counts"] = db.table_counts(engine)
    except Exception as exc:  # report, don't crash: this is the diagnostic command
        status["error"] = f"{type(exc).__name__}: {_first_line(exc)}"
    return status


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0][:500] if text.strip() else type(exc).__name__
