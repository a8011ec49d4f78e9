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
    smote_ratio: float | None = 0.05  # minority/majority after oversampling; None disables SMOTE
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


def time_ordered_split(timestamps: pd.Series, validation: float = 0.2, holdout: float = 0.2) -> Split:
    """Positions of the oldest rows (train), the next (validation) and the newest (holdout).

    Random splits leak the future into training; fraud models are judged on what comes next.
    """
    order = np.argsort(pd.to_datetime(timestamps, utc=True).to_numpy(), kind="stable")
    n = len(order)
    n_holdout = int(round(n * holdout))
    n_validation = int(round(n * validation))
    n_train = n - n_holdout - n_validation
    return Split(order[:n_train], order[n_train:n_train + n_validation], order[n_train + n_validation:])


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, rule: str = "max_f1") -> float:
    """The decision threshold by ``rule``: ``max_f1``, or ``precision:P`` — the lowest
    threshold whose precision reaches P (most recall at that precision)."""
    y_true = np.asarray(y_true).astype(int)
    if y_true.sum() == 0:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y_true, scores)
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


def evaluate(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC ROC, average precision, and precision/recall/F1 of decisions at ``threshold``."""
    y_true = np.asarray(y_true).astype(int)
    predicted = scores >= threshold
    true_positives = int((predicted & (y_true == 1)).sum())
    n_predicted = int(predicted.sum())
    n_positive = int(y_true.sum())
    precision = true_positives / n_predicted if n_predicted else 0.0
    recall = true_positives / n_positive if n_positive else 0.0
    both_classes = 0 < n_positive < len(y_true)
    return {
        "auc_roc": float(roc_auc_score(y_true, scores)) if both_classes else float("nan"),
        "average_precision": float(average_precision_score(y_true, scores)) if both_classes else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "threshold": float(threshold),
        "rows": int(len(y_true)),
        "frauds": n_positive,
        "flagged": n_predicted,
    }


def promotion_decision(challenger: dict[str, float], champion: dict[str, float] | None,
                       tolerance: float) -> tuple[bool, str]:
    """Promote unless the challenger's average precision is worse than the champion's
    on the same holdout by more than ``tolerance``."""
    if champion is None:
        return True, "no champion: first model"
    new, old = challenger["average_precision"], champion["average_precision"]
    if np.isnan(new):
        return False, "challenger average precision is undefined on the holdout"
    if np.isnan(old) or new >= old - tolerance:
        return True, f"average precision {new:.4f} vs champion {old:.4f} (tolerance {tolerance})"
    return False, f"average precision {new:.4f} is worse than champion {old:.4f} by more than {tolerance}"
