"""Training and evaluation: SMOTE → RandomForest, time-ordered splits, threshold choice,
metrics the fraud field uses, and the champion/challenger gate.

SMOTE sits inside an imbalanced-learn Pipeline, so it resamples only the rows the
pipeline is fitted on; validation and holdout rows are never oversampled.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


class TrainingError(RuntimeError):
    """The data cannot produce a meaningful model (too few rows, one class only, ...)."""


@dataclass(frozen=True)
class TrainingParams:
    """Model settings; defaults chosen by backtest (docs/model-selection.md)."""

    n_estimators: int = 100
    max_depth: int | None = 12
    min_samples_leaf: int = 1
    max_features: str | float = "sqrt"
    max_samples: float | None = 0.5
    class_weight: str | None = None
    smote_ratio: float | None = 0.02  # minority/majority after oversampling; None disables SMOTE
    smote_k_neighbors: int = 5
    random_state: int = 0
    n_jobs: int = -1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_pipeline(params: TrainingParams, minority_count: int, majority_count: int) -> Pipeline:
    """The pipeline for a training set with the given class counts."""
    steps: list[tuple[str, Any]] = []
    current_ratio = minority_count / max(majority_count, 1)
    if params.smote_ratio is not None and current_ratio < params.smote_ratio:
        if minority_count < 2:
            raise TrainingError("SMOTE needs at least 2 fraud rows in the training window")
        steps.append(("smote", SMOTE(
            sampling_strategy=params.smote_ratio,
            k_neighbors=min(params.smote_k_neighbors, minority_count - 1),
            random_state=params.random_state,
        )))
    steps.append(("forest", RandomForestClassifier(
        n_estimators=params.n_estimators,
        max_depth=params.max_depth,
        min_samples_leaf=params.min_samples_leaf,
        max_features=params.max_features,
        max_samples=params.max_samples,
        class_weight=params.class_weight,
        random_state=params.random_state,
        n_jobs=params.n_jobs,
    )))
    return Pipeline(steps)


def fit_pipeline(X: np.ndarray, y: np.ndarray, params: TrainingParams) -> Pipeline:
    y = np.asarray(y).astype(int)
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        raise TrainingError("the training window holds a single class; need fraud and genuine rows")
    pipeline = build_pipeline(params, positives, len(y) - positives)
    return pipeline.fit(X, y)


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    validation: np.ndarray
    holdout: np.ndarray


def time_ordered_split(timestamps: pd.Series, validation: float = 0.2, holdout: float = 0.2,
                       weights: np.ndarray | None = None) -> Split:
    """Positions of the oldest rows (train), the next (validation) and the newest (holdout).

    With ``weights`` (rows sampled from a larger population), the cut points are where the
    *population* reaches those shares, not the sample. Random splits leak the future into
    training; fraud models are judged on what comes next.
    """
    order = np.argsort(pd.to_datetime(timestamps, utc=True).to_numpy(), kind="stable")
    n = len(order)
    if weights is None:
        n_holdout = int(round(n * holdout))
        n_validation = int(round(n * validation))
        n_train = n - n_holdout - n_validation
    else:
        cumulative = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
        total = cumulative[-1] if n else 0.0
        n_train = int(np.searchsorted(cumulative, total * (1 - validation - holdout), side="right"))
        n_validation = int(np.searchsorted(cumulative, total * (1 - holdout), side="right")) - n_train
    return Split(order[:n_train], order[n_train:n_train + n_validation], order[n_train + n_validation:])


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, rule: str = "max_f1",
                     sample_weight: np.ndarray | None = None) -> float:
    """The decision threshold by ``rule``: ``max_f1``, or ``precision:P`` — the lowest
    threshold whose precision reaches P (most recall at that precision). Weighted rows
    stand for that many population rows."""
    y_true = np.asarray(y_true).astype(int)
    if y_true.sum() == 0:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y_true, scores, sample_weight=sample_weight)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    if rule == "max_f1":
        f1 = np.divide(2 * precision * recall, precision + recall,
                       out=np.zeros_like(precision), where=(precision + recall) > 0)
        return float(thresholds[int(np.argmax(f1))])
    if rule.startswith("precision:"):
        target = float(rule.split(":", 1)[1])
        reaching = np.flatnonzero(precision >= target)
        if len(reaching) == 0:
            return float(thresholds[int(np.argmax(precision))])
        return float(thresholds[reaching[0]])
    raise ValueError(f"unknown THRESHOLD_RULE {rule!r}: use max_f1 or precision:<0..1>")


def evaluate(y_true: np.ndarray, scores: np.ndarray, threshold: float,
             sample_weight: np.ndarray | None = None) -> dict[str, float]:
    """AUC ROC, average precision, and precision/recall/F1 of decisions at ``threshold``.

    With ``sample_weight`` every figure estimates the full population the rows were sampled
    from; ``rows``/``frauds`` count the rows scored, ``population_rows`` what they stand for.
    """
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    weight = np.ones(len(y_true)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    predicted = scores >= threshold
    true_positives = float(weight[predicted & (y_true == 1)].sum())
    flagged = float(weight[predicted].sum())
    positives = float(weight[y_true == 1].sum())
    precision = true_positives / flagged if flagged else 0.0
    recall = true_positives / positives if positives else 0.0
    both_classes = 0 < int(y_true.sum()) < len(y_true)
    return {
        "auc_roc": float(roc_auc_score(y_true, scores, sample_weight=weight)) if both_classes else float("nan"),
        "average_precision": (float(average_precision_score(y_true, scores, sample_weight=weight))
                              if both_classes else float("nan")),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "threshold": float(threshold),
        "rows": int(len(y_true)),
        "frauds": int(y_true.sum()),
        "flagged": int(predicted.sum()),
        "population_rows": float(weight.sum()),
        "flagged_share": flagged / float(weight.sum()) if len(y_true) else 0.0,
    }


# --- the champion/challenger gate ------------------------------------------------------


def weighted_average_precision(y_true: np.ndarray, scores: np.ndarray, weight: np.ndarray) -> float:
    """Average precision as scikit-learn defines it (step-wise, ties as one threshold), for
    non-negative row weights; NaN without positive weight. O(n log n)."""
    order = np.argsort(-scores, kind="stable")
    return _ap_sorted(y_true[order], scores[order], weight[order])


def _ap_sorted(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> float:
    true_weight = np.where(y == 1, w, 0.0)
    positive = true_weight.sum()
    if positive <= 0:
        return float("nan")
    # The last row of each run of equal scores is where that threshold's counts are read.
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(true_weight)[last_of_tie]
    flagged = np.cumsum(w)[last_of_tie]
    precision = np.divide(tp, flagged, out=np.zeros_like(tp), where=flagged > 0)
    recall = tp / positive
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class Comparison:
    """Challenger vs champion on the same rows: the AP difference and its bootstrap interval."""

    challenger_ap: float
    champion_ap: float
    delta: float
    low: float  # lower bound of the two-sided ``confidence`` interval of the difference
    high: float
    frauds: int
    rows: int
    confidence: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def compare(y_true: np.ndarray, challenger: np.ndarray, champion: np.ndarray, weight: np.ndarray | None = None,
            rounds: int = 300, confidence: float = 0.9, seed: int = 0) -> Comparison:
    """Paired, class-stratified bootstrap of AP(challenger) - AP(champion) on the same rows.

    Resampling within each class keeps the fraud count fixed, as it is in the population;
    the weights (constant within a class when genuine rows were subsampled) carry over.
    """
    y = np.asarray(y_true).astype(int)
    weight = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    a, b = np.asarray(challenger, dtype=np.float64), np.asarray(champion, dtype=np.float64)
    order_a, order_b = np.argsort(-a, kind="stable"), np.argsort(-b, kind="stable")
    ap_a = _ap_sorted(y[order_a], a[order_a], weight[order_a])
    ap_b = _ap_sorted(y[order_b], b[order_b], weight[order_b])
    rng = np.random.default_rng(seed)
    fraud_rows, genuine_rows = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    deltas = np.empty(rounds)
    for r in range(rounds):
        # Counts per row of one stratified resample, applied to both models' sorted orders.
        counts = np.zeros(len(y))
        for rows in (fraud_rows, genuine_rows):
            if len(rows):
                np.add.at(counts, rows[rng.integers(0, len(rows), len(rows))], 1.0)
        resampled = counts * weight
        deltas[r] = (_ap_sorted(y[order_a], a[order_a], resampled[order_a])
                     - _ap_sorted(y[order_b], b[order_b], resampled[order_b]))
    tail = (1 - confidence) / 2
    low, high = (np.nanquantile(deltas, [tail, 1 - tail]) if np.isfinite(deltas).any() else (np.nan, np.nan))
    return Comparison(ap_a, ap_b, ap_a - ap_b, float(low), float(high), int(y.sum()), int(len(y)), confidence)


@dataclass(frozen=True)
class GateRules:
    """When a challenger may replace the champion (settings PROMOTION_TOLERANCE, GATE_*)."""

    tolerance: float = 0.01
    min_frauds: int = 30
    confidence: float = 0.9
    guard_tolerance: float = 0.02


def promotion_decision(holdout: Comparison | None, guard: Comparison | None, rules: GateRules,
                       challenger_frauds: int = 0) -> tuple[bool, str]:
    """Promote only when the evidence says the challenger is not worse.

    * no champion: promote (something must serve);
    * fewer than ``min_frauds`` frauds in the holdout: keep the champion — too little
      evidence either way;
    * holdout: the lower end of the confidence interval of ΔAP must be ≥ −tolerance
      ("not worse by more than the tolerance, with confidence"), so noise alone never
      promotes;
    * guard set (frozen, trusted labels kept with the champion, which label traffic cannot
      change): the challenger must not be clearly worse — the upper end of its ΔAP interval
      must be ≥ −guard_tolerance.
    """
    if holdout is None:
        return True, "no champion: first model"
    if holdout.frauds < rules.min_frauds:
        return False, (f"holdout holds {holdout.frauds} frauds; at least {rules.min_frauds} are needed to judge "
                       f"a challenger — champion kept")
    if not np.isfinite(holdout.challenger_ap):
        return False, "challenger average precision is undefined on the holdout"
    if not np.isfinite(holdout.champion_ap):
        return True, f"champion average precision undefined on the holdout; challenger {holdout.challenger_ap:.4f}"
    pct = int(round(holdout.confidence * 100))
    summary = (f"average precision {holdout.challenger_ap:.4f} vs champion {holdout.champion_ap:.4f} "
               f"(Δ {holdout.delta:+.4f}, {pct}% interval [{holdout.low:+.4f}, {holdout.high:+.4f}], "
               f"{holdout.frauds} frauds)")
    if holdout.low < -rules.tolerance:
        return False, f"{summary}: not shown to be within {rules.tolerance} of the champion — champion kept"
    if guard is not None and guard.frauds and np.isfinite(guard.high) and guard.high < -rules.guard_tolerance:
        return False, (f"{summary}, but clearly worse on the guard set: Δ {guard.delta:+.4f} "
                       f"[{guard.low:+.4f}, {guard.high:+.4f}] on {guard.frauds} trusted frauds — champion kept")
    guard_text = "" if guard is None else f"; guard set Δ {guard.delta:+.4f} [{guard.low:+.4f}, {guard.high:+.4f}]"
    return True, summary + guard_text
