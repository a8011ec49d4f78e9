"""Decision bands (shared/decisions.py): the cheapest bands, found fast, with weights."""
import json
import math
import time

import numpy as np
import pytest

from shared.decisions import Bands, CostModel, choose_bands, cost_curve, decide, plot_cost_curve

COSTS = CostModel(review_cost=5.0, decline_cost=20.0)


def _direct_cost(y, scores, amounts, costs, weight, review_threshold, decline_threshold):
    """Total cost of the bands, evaluated row by row from the definitions."""
    loss = amounts if costs.fraud_loss == "amount" else np.full(len(y), float(costs.fraud_loss))
    declined = scores >= decline_threshold
    reviewed = ~declined & (scores >= review_threshold)
    approved = ~declined & ~reviewed
    per_row = (approved * y * loss + reviewed * costs.review_cost + declined * (1 - y) * costs.decline_cost)
    return float(np.sum(weight * per_row))


def _brute_force(y, scores, amounts, costs, weight):
    """The least cost over every pair of cut points, O(g² n)."""
    candidates = np.r_[np.unique(scores), math.inf]
    return min(_direct_cost(y, scores, amounts, costs, weight, r, d)
               for d in candidates for r in candidates if r <= d)


def _data(rng, n, distinct=None):
    y = (rng.random(n) < 0.2).astype(int)
    scores = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)
    if distinct:  # few distinct values: many ties
        scores = np.round(scores * distinct) / distinct
    amounts = np.round(rng.gamma(2.0, 40.0, n), 2)
    return y, scores, amounts


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_a_brute_force_search(seed, weighted):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    y, scores, amounts = _data(rng, n, distinct=[None, 5, 20][seed % 3])
    weight = rng.uniform(0.1, 30.0, n) if weighted else np.ones(n)
    costs = [COSTS, CostModel(1.0, 50.0, fraud_loss=100.0), CostModel(30.0, 2.0)][seed % 3]
    bands = choose_bands(y, scores, amounts, costs, sample_weight=weight if weighted else None)
    best = _brute_force(y, scores, amounts, costs, weight)
    found = _direct_cost(y, scores, amounts, costs, weight, bands.review_threshold, bands.decline_threshold)
    assert found == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert bands.expected_cost_per_1000 == pytest.approx(best * 1000 / weight.sum(), rel=1e-9, abs=1e-9)
    assert bands.review_threshold <= bands.decline_threshold


def test_weights_are_the_same_as_duplicated_rows():
    rng = np.random.default_rng(7)
    y, scores, amounts = _data(rng, 80, distinct=30)
    copies = rng.integers(1, 6, len(y))
    weighted = choose_bands(y, scores, amounts, COSTS, sample_weight=copies)
    duplicated = choose_bands(np.repeat(y, copies), np.repeat(scores, copies), np.repeat(amounts, copies), COSTS)
    assert (weighted.review_threshold, weighted.decline_threshold) == \
        (duplicated.review_threshold, duplicated.decline_threshold)
    assert weighted.expected_cost_per_1000 == pytest.approx(duplicated.expected_cost_per_1000, rel=1e-12)
    assert weighted.table == duplicated.table


def test_a_hand_worked_example():
    # Scores high to low: fraud 100, genuine, fraud 40, genuine, genuine.
    y = np.array([1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.6, 0.3, 0.1])
    amounts = np.array([100.0, 10.0, 40.0, 10.0, 10.0])
    bands = choose_bands(y, scores, amounts, CostModel(review_cost=5.0, decline_cost=20.0))
    # Decline 0.9 (genuine 0 cost), review 0.8 and 0.6 (2 × 5): 10 in all, less than any other.
    assert (bands.decline_threshold, bands.review_threshold) == (0.9, 0.6)
    assert bands.expected_cost_per_1000 == pytest.approx(10 / 5 * 1000)
    [optimal, single, review_only, approve_all] = bands.table
    assert optimal == {"band": "optimal", "review_threshold": 0.6, "decline_threshold": 0.9,
                       "cost_per_1000": 2000.0, "approved": 0.4, "reviewed": 0.4, "declined": 0.2,
                       "frauds_caught": 1.0}
    # Decline down to 0.6: one genuine declined (20); or only 0.9 with 40 lost: 20 is best.
    assert (single["decline_threshold"], single["cost_per_1000"]) == (0.6, 4000.0)
    assert (review_only["review_threshold"], review_only["cost_per_1000"]) == (0.6, 3000.0)
    assert approve_all == {"band": "approve all", "review_threshold": None, "decline_threshold": None,
                           "cost_per_1000": 28000.0, "approved": 1.0, "reviewed": 0.0, "declined": 0.0,
                           "frauds_caught": 0.0}


def test_no_frauds_approves_everything():
    bands = choose_bands([0, 0, 0], [0.9, 0.5, 0.1], [10.0, 20.0, 30.0], COSTS)
    assert bands.review_threshold == bands.decline_threshold == math.inf
    assert bands.expected_cost_per_1000 == 0.0
    assert bands.table[0]["frauds_caught"] is None
    assert [decide(p, bands) for p in (1.0, 0.5, 0.0)] == ["approve"] * 3


def test_all_frauds_declines_everything():
    bands = choose_bands([1, 1, 1], [0.9, 0.5, 0.1], [10.0, 20.0, 30.0], COSTS)
    assert bands.review_threshold == bands.decline_threshold == 0.1
    assert bands.expected_cost_per_1000 == 0.0


def test_tied_scores_always_share_a_decision():
    # One score for all: approve all (lose 100), review all (15) or decline all (40).
    bands = choose_bands([1, 0, 0], [0.5, 0.5, 0.5], [100.0, 10.0, 10.0], COSTS)
    assert (bands.review_threshold, bands.decline_threshold) == (0.5, math.inf)
    assert bands.expected_cost_per_1000 == pytest.approx(5000.0)


def test_no_review_band_when_review_costs_too_much():
    y, scores, amounts = _data(np.random.default_rng(3), 500)
    bands = choose_bands(y, scores, amounts, CostModel(review_cost=1000.0, decline_cost=20.0))
    assert bands.review_threshold == bands.decline_threshold < math.inf
    assert decide(bands.decline_threshold, bands) == "decline"


def test_free_review_reviews_down_to_the_last_fraud_and_no_further():
    y, scores, amounts = _data(np.random.default_rng(4), 300)
    bands = choose_bands(y, scores, amounts, CostModel(review_cost=0.0, decline_cost=20.0))
    # Every band reaching the lowest-scoring fraud costs 0; ties go to the least intervention.
    assert bands.review_threshold == scores[y == 1].min()
    assert bands.decline_threshold == math.inf and bands.expected_cost_per_1000 == 0.0


def test_constant_fraud_loss_needs_no_amounts():
    bands = choose_bands([1, 0], [0.9, 0.1], None, CostModel(1.0, 2.0, fraud_loss=50.0))
    assert bands.decline_threshold == 0.9


def test_current_threshold_row():
    y = np.array([1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.6, 0.3, 0.1])
    bands = choose_bands(y, scores, np.full(5, 50.0), COSTS, current_threshold=0.7)
    row = bands.table[-1]
    assert row["band"].startswith("current threshold 0.7")
    assert (row["decline_threshold"], row["declined"], row["frauds_caught"]) == (0.8, 0.4, 0.5)


def test_decide_bands():
    bands = Bands(review_threshold=0.3, decline_threshold=0.8)
    assert [decide(p, bands) for p in (0.0, 0.29, 0.3, 0.79, 0.8, 1.0)] == \
        ["approve", "approve", "review", "review", "decline", "decline"]
    with pytest.raises(ValueError):
        decide(float("nan"), bands)


def test_bands_round_trip_through_json():
    y, scores, amounts = _data(np.random.default_rng(5), 200)
    for bands in (choose_bands(y, scores, amounts, COSTS),
                  choose_bands(np.zeros(3, int), [0.1, 0.2, 0.3], [1, 1, 1], COSTS)):
        again = Bands.from_dict(json.loads(json.dumps(bands.to_dict(), allow_nan=False)))
        assert again == bands


@pytest.mark.parametrize("kwargs, message", [
    (dict(y_true=[0, 1], scores=[0.1]), "one length"),
    (dict(y_true=[], scores=[]), "no rows"),
    (dict(y_true=[0, 1], scores=[0.1, float("nan")]), "finite"),
    (dict(y_true=[0, 2], scores=[0.1, 0.2]), "0 \\(genuine\\)"),
    (dict(y_true=[0, 1], scores=[0.1, 0.2], sample_weight=[1, -1]), "sample_weight"),
    (dict(y_true=[0, 1], scores=[0.1, 0.2], amounts=None), "amounts are needed"),
])
def test_bad_inputs_are_refused(kwargs, message):
    arguments = {"amounts": [1.0] * len(kwargs["scores"]), "costs": COSTS, **kwargs}
    with pytest.raises(ValueError, match=message):
        choose_bands(**arguments)


@pytest.mark.parametrize("kwargs", [dict(review_cost=-1, decline_cost=1), dict(review_cost=1, decline_cost=math.inf),
                                    dict(review_cost=1, decline_cost=1, fraud_loss="value")])
def test_cost_model_is_validated(kwargs):
    with pytest.raises(ValueError):
        CostModel(**kwargs)


def test_cost_curve_contains_the_optimum():
    y, scores, amounts = _data(np.random.default_rng(6), 3000)
    weight = np.where(y == 1, 1.0, 10.0)
    bands = choose_bands(y, scores, amounts, COSTS, sample_weight=weight)
    curve = cost_curve(y, scores, amounts, COSTS, sample_weight=weight, max_points=200)
    assert len(curve.decline_thresholds) <= 201
    best = min(min(curve.cost_per_1000), curve.decline_nothing_cost_per_1000)
    assert best == pytest.approx(bands.expected_cost_per_1000, rel=1e-9)
    assert all(r <= d for r, d in zip(curve.review_thresholds, curve.decline_thresholds))
    assert all(w <= s + 1e-9 for w, s in zip(curve.cost_per_1000, curve.single_threshold_cost_per_1000))
    assert curve.approve_all_cost_per_1000 == pytest.approx(bands.table[3]["cost_per_1000"], abs=1e-4)
    json.dumps(curve.to_dict(), allow_nan=False)


def test_cost_curve_on_few_scores_is_exact():
    y = np.array([1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.6, 0.3, 0.1])
    curve = cost_curve(y, scores, np.array([100.0, 10.0, 40.0, 10.0, 10.0]), COSTS)
    assert curve.decline_thresholds == [0.9, 0.8, 0.6, 0.3, 0.1]
    assert curve.review_thresholds == [0.6, 0.6, 0.6, 0.3, 0.1]
    assert curve.cost_per_1000[0] == pytest.approx(2000.0)
    assert curve.decline_nothing_cost_per_1000 == pytest.approx(3000.0)


def test_plot_is_a_png():
    y, scores, amounts = _data(np.random.default_rng(8), 500)
    bands = choose_bands(y, scores, amounts, COSTS)
    png = plot_cost_curve(cost_curve(y, scores, amounts, COSTS), bands)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_half_a_million_rows_take_well_under_a_few_seconds():
    rng = np.random.default_rng(9)
    n = 500_000
    y = (rng.random(n) < 0.01).astype(int)
    scores = np.clip(rng.beta(1, 20, n) + 0.4 * y * rng.random(n), 0, 1)
    amounts = rng.gamma(2.0, 40.0, n)
    weight = np.where(y == 1, 1.0, 20.0)
    start = time.perf_counter()
    choose_bands(y, scores, amounts, COSTS, sample_weight=weight)
    elapsed = time.perf_counter() - start
    print(f"choose_bands on {n:,} rows: {elapsed:.3f} s")
    assert elapsed < 3.0
