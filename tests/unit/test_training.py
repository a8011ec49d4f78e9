"""Training helpers: splits, thresholds, metrics, the gate."""
import numpy as np
import pandas as pd
import pytest

from shared.training import (
    TrainingError,
    TrainingParams,
    build_pipeline,
    choose_threshold,
    evaluate,
    fit_pipeline,
    promotion_decision,
    time_ordered_split,
)


def test_time_ordered_split_is_by_time_not_position():
    timestamps = pd.Series(pd.date_range("2026-01-01", periods=10, freq="D", tz="UTC")[::-1])
    split = time_ordered_split(timestamps, validation=0.2, holdout=0.2)
    newest = timestamps.iloc[split.holdout]
    assert newest.min() > timestamps.iloc[split.validation].max() > timestamps.iloc[split.train].max()
    assert len(split.train) == 6 and len(split.validation) == 2 and len(split.holdout) == 2


def test_threshold_rules():
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.9])
    assert choose_threshold(y, scores, "max_f1") == pytest.approx(0.35)
    assert choose_threshold(y, scores, "precision:1.0") == pytest.approx(0.6)
    with pytest.raises(ValueError):
        choose_threshold(y, scores, "magic")


def test_evaluate_counts_decisions_at_threshold():
    metrics = evaluate(np.array([0, 1, 1, 0]), np.array([0.9, 0.8, 0.1, 0.2]), 0.5)
    assert metrics["precision"] == 0.5 and metrics["recall"] == 0.5 and metrics["flagged"] == 2
    assert metrics["auc_roc"] == pytest.approx(0.25)  # 1 of 4 fraud/genuine pairs ranked right


def test_gate():
    assert promotion_decision({"average_precision": 0.5}, None, 0.01)[0]
    assert promotion_decision({"average_precision": 0.495}, {"average_precision": 0.5}, 0.01)[0]
    promote, reason = promotion_decision({"average_precision": 0.4}, {"average_precision": 0.5}, 0.01)
    assert not promote and "worse" in reason


def test_smote_is_in_the_pipeline_and_only_resamples_training_rows():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3))
    y = (rng.random(2000) < 0.02).astype(int)
    X[y == 1] += 2
    pipeline = fit_pipeline(X, y, TrainingParams(n_estimators=5, n_jobs=1, smote_ratio=0.5))
    assert [name for name, _ in pipeline.steps] == ["smote", "forest"]
    forest = pipeline.named_steps["forest"]
    # The forest saw the oversampled set; scoring returns one probability per input row.
    assert forest.n_features_in_ == 3
    assert pipeline.predict_proba(X[:17]).shape == (17, 2)


def test_smote_skipped_when_already_balanced_and_errors_on_single_class():
    assert [n for n, _ in build_pipeline(TrainingParams(smote_ratio=0.1), 50, 100).steps] == ["forest"]
    with pytest.raises(TrainingError):
        fit_pipeline(np.zeros((10, 2)), np.zeros(10), TrainingParams(n_estimators=2))
