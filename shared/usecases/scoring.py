"""The scoring use case: features from the stored history, the promoted model, the queue.

A transaction is never answered as scored unless it was queued. Replays are idempotent as
payment APIs make them: the same ``transaction_id`` with the same content gets the first
answer again (nothing is queued twice); with different content, a conflict naming the
fields, and nothing changes.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Protocol

from ..errors import Conflict
from ..features import FeatureSpec, empty_aggregates, features_for_one
from ..model import LoadedModel
from ..schema import ScoredTransaction, Transaction
from ..storage.history import HistoryRead

log = logging.getLogger(__name__)


class ModelSource(Protocol):
    def get(self) -> LoadedModel: ...


class HistorySource(Protocol):
    def read(self, transaction: Transaction, spec: FeatureSpec) -> HistoryRead: ...


class Sender(Protocol):
    def send(self, message: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Prediction:
    """A scored transaction and the threshold its decision was made at. ``replayed``: the
    stored answer to an earlier request with the same transaction_id."""

    scored: ScoredTransaction
    threshold: float
    replayed: bool = False


class RecentAnswers:
    """This process's latest answers by transaction_id: a replay that arrives before the
    first copy is persisted still gets the first answer (bounded LRU)."""

    def __init__(self, capacity: int = 100_000):
        self._capacity = capacity
        self._answers: "OrderedDict[str, Prediction]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, transaction_id: str) -> Prediction | None:
        with self._lock:
            return self._answers.get(transaction_id)

    def put(self, prediction: Prediction) -> None:
        with self._lock:
            self._answers[prediction.scored.transaction.transaction_id] = prediction
            self._answers.move_to_end(prediction.scored.transaction.transaction_id)
            while len(self._answers) > self._capacity:
                self._answers.popitem(last=False)


class Scoring:
    """Scores transactions with the promoted model and queues them for persistence."""

    def __init__(self, models: ModelSource, history: HistorySource, sender: Sender,
                 recent: RecentAnswers | None = None):
        self.models = models
        self.history = history
        self.sender = sender
        self.recent = recent or RecentAnswers()

    def score(self, transaction: Transaction) -> Prediction:
        """Raises ModelUnavailable when no model is loaded, EnqueueFailed when the queue did
        not take the message, Conflict for a replayed id with other content. If the history
        cannot be read in time, the transaction is scored on its own and marked degraded."""
        model = self.models.get()
        earlier = self.recent.get(transaction.transaction_id)
        if earlier is not None:
            return self._replay(transaction, earlier)
        degraded = False
        try:
            read = self.history.read(transaction, model.spec)
            aggregates = read.aggregates
            if read.stored is not None and read.stored.get("fraud_probability") is not None:
                return self._replay(transaction, stored_prediction(read.stored))
        except Exception as exc:
            log.warning("history unavailable for %s (%s): scoring degraded", transaction.transaction_id,
                        type(exc).__name__)
            aggregates, degraded = empty_aggregates(model.spec), True
        features = features_for_one(aggregates, transaction.amount, transaction.timestamp, model.spec)
        probability = model.score(features)
        scored = ScoredTransaction(
            transaction=transaction,
            fraud_probability=probability,
            is_fraud=probability >= model.threshold,
            model_version=model.version,
            scored_at=datetime.now(timezone.utc),
            degraded=degraded,
            decline_threshold=model.threshold,
        )
        self.sender.send(scored.to_message())
        prediction = Prediction(scored, model.threshold)
        self.recent.put(prediction)
        return prediction

    @staticmethod
    def _replay(transaction: Transaction, earlier: Prediction) -> Prediction:
        differences = earlier.scored.transaction.differences(transaction)
        if differences:
            raise Conflict(f"transaction_id {transaction.transaction_id!r} was already used for a different "
                           f"transaction (differs in {', '.join(differences)}); the first one stands",
                           differences)
        return replace(earlier, replayed=True)


def stored_prediction(row: dict[str, Any]) -> Prediction:
    """The answer a stored, scored transaction was given."""
    import json

    from ..storage.engines import naive_utc

    def aware(value: datetime) -> datetime:
        return naive_utc(value).replace(tzinfo=timezone.utc)

    transaction = Transaction(row["transaction_id"], aware(row["timestamp"]), row["customer_id"], row["terminal_id"],
                              float(row["amount"]))
    threshold = row.get("decline_threshold")
    scored = ScoredTransaction(
        transaction=transaction,
        fraud_probability=float(row["fraud_probability"]),
        is_fraud=bool(row["predicted_fraud"]),
        model_version=row["model_version"],
        scored_at=aware(row["scored_at"]),
        degraded=bool(row["degraded"]),
        decision=row.get("decision"),
        review_threshold=row.get("review_threshold"),
        decline_threshold=threshold,
        rule=row.get("rule"),
        reasons=json.loads(row["reasons"]) if row.get("reasons") else None,
    )
    return Prediction(scored, float(threshold) if threshold is not None else float("nan"))
