"""Training helpers: splits, thresholds, metrics, the gate."""
import numpy as np
import pandas as pd
import pytest

from shared.training import (
    GateRules,
    TrainingError,
    TrainingParams,
    build_pipeline,
    choose_threshold,
    compare,
    evaluate,
    fit_pipeline,
    promotion_decision,
    time_ordered_split,
    weighted_average_precision,
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


def _models(n: int, frauds: int, gap: float, seed: int = 0):
    """Labels and two models' scores: the challenger separates frauds by ``gap`` more."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=int)
    y[rng.choice(n, frauds, replace=False)] = 1
    base = rng.normal(size=n) + 2.0 * y
    return y, base + gap * y + rng.normal(scale=0.3, size=n), base + rng.normal(scale=0.3, size=n)


def test_weighted_average_precision_equals_scikit_learn_with_ties():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(2, 200))
        y = (rng.random(n) < 0.2).astype(int)
        y[0] = 1
        scores, weight = np.round(rng.random(n), 1), rng.integers(1, 5, n).astype(float)
        assert weighted_average_precision(y, scores, weight) == pytest.approx(
            average_precision_score(y, scores, sample_weight=weight), abs=1e-12)


def test_gate_needs_evidence_not_luck():
    rules = GateRules(tolerance=0.01, min_frauds=30, confidence=0.9)
    assert promotion_decision(None, None, rules) == (True, "no champion: first model")
    # Few frauds: whatever the point estimate, the champion stays.
    y, better, champion = _models(14_600, 14, gap=0.5)
    promote, reason = promotion_decision(compare(y, better, champion), None, rules)
    assert not promote and "14 frauds" in reason
    # Two equally good models on plenty of data: noise alone does not promote...
    y, same_a, same_b = _models(20_000, 200, gap=0.0)
    comparison = compare(y, same_a, same_b)
    assert comparison.low < 0 < comparison.high
    # ...unless the interval stays within the tolerance; a clearly better one is promoted.
    y, better, champion = _models(20_000, 400, gap=1.0)
    promote, reason = promotion_decision(compare(y, better, champion), None, rules)
    assert promote and "interval" in reason
    y, worse, champion = _models(20_000, 400, gap=-1.0)
    assert not promotion_decision(compare(y, worse, champion), None, rules)[0]


def test_guard_set_vetoes_a_challenger_clearly_worse_on_trusted_labels():
    rules = GateRules(tolerance=0.01, min_frauds=30, guard_tolerance=0.02)
    y, better, champion = _models(20_000, 400, gap=1.0)
    holdout = compare(y, better, champion)
    gy, worse, guard_champion = _models(5_000, 100, gap=-1.5, seed=3)
    promote, reason = promotion_decision(holdout, compare(gy, worse, guard_champion), rules)
    assert not promote and "guard set" in reason
    assert promotion_decision(holdout, compare(gy, guard_champion, guard_champion), rules)[0]


def test_weighted_split_cuts_where_the_population_does():
    timestamps = pd.Series(pd.date_range("2026-01-01", periods=10, freq="D", tz="UTC"))
    # The first five rows each stand for 3 population rows: 15 of 20 population rows are old.
    weights = np.array([3.0] * 5 + [1.0] * 5)
    split = time_ordered_split(timestamps, validation=0.2, holdout=0.2, weights=weights)
    assert len(split.train) == 4 and len(split.validation) == 2 and len(split.holdout) == 4


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
