"""The scoring use case: features from the stored history, the promoted model, the queue.

A transaction is never answered as scored unless it was queued. Replays are idempotent as
payment APIs make them: the same ``transaction_id`` with the same content gets the first
answer again (nothing is queued twice); with different content, a conflict naming the
fields, and nothing changes.
"""
from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Protocol

from ..decisions import decide
from ..errors import Conflict, EnqueueFailed
from ..features import FeatureSpec, empty_aggregates, features_for_one
from ..model import LoadedModel
from ..rules import RuleSet
from ..schema import ScoredTransaction, Transaction
from ..storage.history import HistoryRead

log = logging.getLogger(__name__)


class ModelSource(Protocol):
    def get(self) -> LoadedModel: ...


class HistorySource(Protocol):
    def read(self, transaction: Transaction, spec: FeatureSpec) -> HistoryRead: ...


class Sender(Protocol):
    def send(self, message: dict[str, Any]) -> None: ...


class RuleSource(Protocol):
    def get(self) -> RuleSet: ...


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
        self._answers: OrderedDict[str, Prediction] = OrderedDict()
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

    def __init__(self, models: ModelSource, history: HistorySource, sender: Sender, rules: RuleSource | None = None,
                 policy: str = "cost", recent: RecentAnswers | None = None):
        self.models = models
        self.history = history
        self.sender = sender
        self.rules = rules
        self.policy = policy  # "cost": approve / review / decline bands; "threshold": one cut
        self.recent = recent or RecentAnswers()

    def score(self, transaction: Transaction) -> Prediction:
        """Raises ModelUnavailable when no model is loaded, EnqueueFailed when the queue did
        not take the message, Conflict for a replayed id with other content. If the history
        cannot be read in time, the transaction is scored on its own and marked degraded."""
        model = self.models.get()
        earlier = self.recent.get(transaction.transaction_id)
        if earlier is not None:
            return self._replay(transaction, earlier)
        read: HistoryRead | None = None
        try:
            read = self.history.read(transaction, model.spec)
        except Exception as exc:
            log.warning("history unavailable for %s (%s): scoring degraded", transaction.transaction_id,
                        type(exc).__name__)
        if read is not None and read.stored is not None and read.stored.get("fraud_probability") is not None:
            return self._replay(transaction, stored_prediction(read.stored))
        degraded = read is None
        aggregates = empty_aggregates(model.spec) if read is None else read.aggregates
        features = features_for_one(aggregates, transaction.amount, transaction.timestamp, model.spec)
        probability = model.score(features)
        bands = model.bands(self.policy)
        # Operator rules decide before the model; the model still scores, for monitoring.
        hit = self.rules.get().evaluate(transaction) if self.rules is not None else None
        decision = hit.decision if hit is not None else decide(probability, bands)
        reasons = None
        if decision != "approve" and model.explainer is not None:
            # Only for transactions someone acts on: approved ones pay nothing for reasons.
            reasons = model.explainer.explain_features(features).reasons(REASONS)
        scored = ScoredTransaction(
            transaction=transaction,
            fraud_probability=probability,
            is_fraud=decision == "decline",
            model_version=model.version,
            scored_at=datetime.now(timezone.utc),
            degraded=degraded,
            decision=decision,
            review_threshold=_finite(bands.review_threshold),
            decline_threshold=_finite(bands.decline_threshold),
            rule=hit.reason if hit is not None else None,
            reasons=reasons,
        )
        try:
            self.sender.send(scored.to_message())
        except EnqueueFailed as exc:
            log.error("transaction not enqueued (%s): %s", transaction.transaction_id, exc)
            raise EnqueueFailed("the transaction could not be queued; retry with the same transaction_id") from exc
        prediction = Prediction(scored, bands.decline_threshold)
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


REASONS = 3  # reason codes per reviewed or declined transaction


def _finite(threshold: float) -> float | None:
    """A band threshold for messages and rows: None when the band is empty ("never")."""
    return threshold if math.isfinite(threshold) else None


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
    return Prediction(scored, float(threshold) if threshold is not None else math.inf)
