"""PSI: bins, shares and the index itself (shared/drift.py)."""
import numpy as np
import pytest

from shared.drift import bin_edges, build_reference, compare, describe, psi, shares


def test_quantile_bins_hold_about_equal_weight():
    values = np.random.default_rng(1).lognormal(size=20_000)
    edges = bin_edges(values)
    assert len(edges) == 9 and edges == sorted(edges)
    assert shares(values, edges) == pytest.approx([0.1] * 10, abs=0.002)


def test_weights_move_the_edges():
    values = np.arange(1000, dtype=float)
    weights = np.where(values < 500, 9.0, 1.0)  # the lower half stands for 9 rows each
    assert bin_edges(values, weights)[4] < 300
    assert shares(values, bin_edges(values, weights), weights) == pytest.approx([0.1] * 10, abs=0.01)


def test_flags_and_small_counts_get_one_bin_per_value():
    flags = np.array([0, 0, 0, 1] * 100, dtype=float)
    assert bin_edges(flags) == [0.0]
    assert shares(flags, [0.0]) == [0.75, 0.25]
    assert bin_edges([3.0, 3.0, 3.0]) == []  # a constant: one bin
    assert bin_edges([]) == [] and shares([], [1.0]) == [0.0, 0.0]


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=50_000)
    edges = bin_edges(reference)
    base = shares(reference, edges)
    same = psi(base, shares(rng.normal(size=50_000), edges))
    small = psi(base, shares(rng.normal(0.1, 1, size=50_000), edges))
    large = psi(base, shares(rng.normal(1.0, 1, size=50_000), edges))
    assert same < 0.005 < small < 0.1 < 0.25 < large
    assert (describe(same), describe(large), describe(None)) == ("stable", "major", "unknown")
    # An empty bin is finite (shares are floored), not infinite.
    assert np.isfinite(psi([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]))


def test_values_outside_the_reference_land_in_the_end_bins():
    edges = bin_edges(np.linspace(0, 1, 1000))
    assert shares([-5.0, 5.0, np.nan, np.inf], edges) == [0.5] + [0.0] * 8 + [0.5]


def test_compare_names_the_largest_shift_of_score_or_feature_and_needs_enough_rows():
    rng = np.random.default_rng(3)
    features = {"amount": rng.lognormal(size=5000), "is_night": (rng.random(5000) < 0.3).astype(float)}
    scores = rng.beta(1, 20, size=5000)
    reference = build_reference(features, scores, np.ones(5000), source="holdout")
    assert reference["rows"] == 5000 and set(reference["features"]) == {"amount", "is_night"}
    live = {"amount": rng.lognormal(size=3000) * 3, "is_night": (rng.random(3000) < 0.3).astype(float)}
    found = compare(reference, live, rng.beta(1, 20, size=3000), min_rows=500)
    assert found["max_feature"] == "amount" and found["level"] == "major"
    assert [p["name"] for p in found["features"]] == ["amount", "is_night"]  # largest first
    assert found["score"]["psi"] < 0.05
    shifted_score = compare(reference, {"is_night": live["is_night"]}, rng.beta(5, 5, size=3000), min_rows=500)
    assert shifted_score["max_feature"] == "score"
    too_few = compare(reference, {k: v[:100] for k, v in live.items()}, scores[:100], min_rows=500)
    assert too_few["max_psi"] is None and all(p["psi"] is None for p in too_few["features"])
