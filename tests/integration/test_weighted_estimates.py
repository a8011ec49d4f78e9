"""Training on a sample must not distort how a model is judged: on a history small enough to
score whole, the importance-weighted estimates from a hash-sampled holdout (every fraud
kept, genuine rows by sample_key, as shared.storage.training_data samples them) match the
metrics of the full holdout.

Measured here with the default features (seed 4, 78,353 holdout rows, 675 frauds), over 8
rotations of the kept key range at 50 % / 20 % of genuine rows: AUC within 0.0001 / 0.0004,
AP errors averaging +0.0001 / −0.0023 (unbiased) with single samples off by up to 0.010 /
0.028, precision at the threshold within 0.009 / 0.016, recall exact (frauds are all kept),
and the full-population F1 at the weighted threshold within 0.003 / 0.008 of the best. The AP
estimate's noise comes from the few genuine rows scored near the top (here about 20 above the
threshold): the gate's bootstrap interval resamples the weighted holdout, so it carries that
noise, and the evaluation keeps tens of thousands of genuine rows (TRAINING_MAX_ROWS; see
README "Scaling").
"""
import numpy as np
import pytest

from shared.features import DEFAULT_SPEC, compute_features
from shared.simulator import simulate_for_volume
from shared.storage.schema import sample_key
from shared.storage.training_data import GUARD_START
from shared.training import TrainingParams, choose_threshold, evaluate, fit_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scored_holdout():
    history = simulate_for_volume(200_000, seed=4, n_days=60, start_date="2026-01-01")
    X = compute_features(history)[DEFAULT_SPEC.names].to_numpy()
    y = history["label"].to_numpy()
    cut = int(len(history) * 0.6)
    model = fit_pipeline(X[:cut], y[:cut], TrainingParams(n_estimators=30, max_depth=10, n_jobs=2))
    scores = model.predict_proba(X[cut:])[:, 1]
    keys = np.array([sample_key(t) for t in history["transaction_id"].iloc[cut:]])
    return y[cut:], scores, keys


ROTATIONS = 8  # independent samples of the same design: the kept key range, rotated


def rotated_sample(keys: np.ndarray, y: np.ndarray, rate: float, rotation: int) -> np.ndarray:
    """Every fraud, and the genuine rows whose key falls in a window of ``rate`` of the training
    partition starting at ``rotation / ROTATIONS`` of it (rotation 0 is what production keeps)."""
    low = rotation * GUARD_START // ROTATIONS
    offset = (keys - low) % GUARD_START
    return (y == 1) | (offset < rate * GUARD_START)


@pytest.mark.parametrize(("rate", "ap_noise"), [(0.5, 0.015), (0.2, 0.03)])
def test_weighted_estimates_on_a_sample_match_the_full_population(scored_holdout, rate, ap_noise):
    y, scores, keys = scored_holdout
    # The training partition (the guard set's 2 % of the hash space is never trained on).
    population = keys < GUARD_START
    y, scores, keys = y[population], scores[population], keys[population]
    threshold = choose_threshold(y, scores)
    full = evaluate(y, scores, threshold)
    ap_errors = []
    for rotation in range(ROTATIONS):
        keep = rotated_sample(keys, y, rate, rotation)
        weight = np.where(y[keep] == 1, 1.0, 1.0 / rate)
        estimate = evaluate(y[keep], scores[keep], threshold, weight)
        assert keep.sum() < (rate + 0.05) * len(y)  # really a sample
        assert estimate["population_rows"] == pytest.approx(len(y), rel=0.02)
        assert abs(estimate["auc_roc"] - full["auc_roc"]) <= 0.001
        assert abs(estimate["average_precision"] - full["average_precision"]) <= ap_noise
        assert abs(estimate["precision"] - full["precision"]) <= 0.02
        assert estimate["recall"] == full["recall"]
        assert abs(estimate["flagged_share"] - full["flagged_share"]) <= 0.001
        ap_errors.append(estimate["average_precision"] - full["average_precision"])
        # The threshold chosen on the weighted sample is nearly as good on the full population as
        # the full population's own (the F1 curve is flat near its top: the threshold itself may move).
        chosen = choose_threshold(y[keep], scores[keep], sample_weight=weight)
        assert evaluate(y, scores, chosen)["f1"] >= full["f1"] - 0.01
    # Unbiased: over the rotations the AP errors average out.
    assert abs(np.mean(ap_errors)) <= 0.005
    keep = rotated_sample(keys, y, rate, 0)
    # Unweighted, the same sample would mislead: precision and flagged share are inflated.
    naive = evaluate(y[keep], scores[keep], threshold)
    assert naive["flagged_share"] > 1.5 * full["flagged_share"]
