"""Reason codes (shared/explain.py): exact, additive, close to SHAP, readable."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.explain import ForestExplainer, describe, top_reasons
from shared.features import DEFAULT_SPEC, NIGHT_LAST_HOUR, compute_features
from shared.simulator import simulate_for_volume
from shared.training import TrainingParams, fit_pipeline

NAMES = DEFAULT_SPEC.names
TOP_ROWS = 100  # the highest scores: the transactions an analyst would see


@pytest.fixture(scope="module")
def model_and_rows():
    """A small model on simulated history, and 300 later rows: the 100 it scores highest
    (the reviewed/declined ones) then 200 at random."""
    history = simulate_for_volume(40_000, seed=3, n_days=60)
    X = compute_features(history)[NAMES].to_numpy(np.float64)
    y = history["label"].to_numpy()
    n_train = int(len(X) * 0.7)
    pipeline = fit_pipeline(X[:n_train], y[:n_train],
                            TrainingParams(n_estimators=30, max_depth=8, n_jobs=1))
    later = X[n_train:]
    order = np.argsort(-pipeline.predict_proba(later)[:, 1], kind="stable")
    rng = np.random.default_rng(0)
    rows = np.vstack([later[order[:TOP_ROWS]], later[rng.choice(order[TOP_ROWS:], 200, replace=False)]])
    return pipeline, rows


@pytest.fixture(scope="module")
def explainer(model_and_rows):
    return ForestExplainer.from_model(model_and_rows[0], NAMES)


def test_contributions_add_up_to_the_forest_probability(model_and_rows, explainer):
    pipeline, rows = model_and_rows
    expected = pipeline.predict_proba(rows)[:, 1]
    one_by_one = np.array([explainer.explain(row).probability for row in rows])
    np.testing.assert_allclose(one_by_one, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(explainer.bias + explainer.contributions(rows).sum(axis=1), expected, rtol=0, atol=1e-9)


def _decision_path_contributions(forest, rows):
    """Saabas contributions the slow, obvious way: per tree, scikit-learn's own
    decision_path, then a Python walk from the root to the leaf."""
    X32 = rows.astype(np.float32)
    out = np.zeros(rows.shape)
    bias = 0.0
    for estimator in forest.estimators_:
        tree = estimator.tree_
        value = tree.value[:, 0, :]
        probability = value[:, 1] / value.sum(axis=1)
        bias += probability[0]
        paths = estimator.decision_path(X32)
        for i in range(len(rows)):
            nodes = set(paths.indices[paths.indptr[i]:paths.indptr[i + 1]])
            node = 0
            while tree.children_left[node] != -1:
                child = next(c for c in (tree.children_left[node], tree.children_right[node]) if c in nodes)
                out[i, tree.feature[node]] += probability[child] - probability[node]
                node = child
    n = len(forest.estimators_)
    return bias / n, out / n


def test_contributions_match_an_independent_per_tree_computation(model_and_rows, explainer):
    pipeline, rows = model_and_rows
    bias, expected = _decision_path_contributions(pipeline.steps[-1][1], rows)
    assert explainer.bias == pytest.approx(bias, abs=1e-12)
    single = np.array([explainer.explain(row).contributions for row in rows])
    np.testing.assert_allclose(single, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(explainer.contributions(rows), expected, rtol=0, atol=1e-12)


def test_the_served_onnx_score_is_what_is_explained(model_and_rows, explainer):
    from shared.compiled import PARITY_TOLERANCE, OnnxScorer, compile_pipeline

    pipeline, rows = model_and_rows
    served = OnnxScorer(compile_pipeline(pipeline, len(NAMES)))(rows)
    explained = explainer.bias + explainer.contributions(rows).sum(axis=1)
    assert np.max(np.abs(served - explained)) <= PARITY_TOLERANCE


def test_reasons_agree_with_shap_on_the_riskiest_rows(model_and_rows, explainer):
    shap = pytest.importorskip("shap")
    pipeline, rows = model_and_rows
    top = rows[:TOP_ROWS]
    values = shap.TreeExplainer(pipeline.steps[-1][1]).shap_values(top)
    shap_fraud = values[1] if isinstance(values, list) else values[..., 1]
    ours = explainer.contributions(top)
    shap_top3 = np.argsort(-shap_fraud, axis=1, kind="stable")[:, :3]
    our_top3 = np.argsort(-ours, axis=1, kind="stable")[:, :3]
    top1_in_shap_top3 = np.mean([our_top3[i, 0] in shap_top3[i] for i in range(len(top))])
    shap_top1_in_ours = np.mean([shap_top3[i, 0] in our_top3[i] for i in range(len(top))])
    same_top1 = np.mean(our_top3[:, 0] == shap_top3[:, 0])
    mean_overlap = np.mean([len(set(our_top3[i]) & set(shap_top3[i])) / 3 for i in range(len(top))])
    print(f"top-1 in SHAP's top-3: {top1_in_shap_top3:.2f}; SHAP's top-1 in ours: {shap_top1_in_ours:.2f}; "
          f"same top-1: {same_top1:.2f}; mean top-3 overlap: {mean_overlap:.2f}")
    # Measured with the default features (shap 0.51.0, 100 riskiest rows), seeds 3/5/7:
    # top-1 in SHAP's top-3 1.00/0.97/1.00, SHAP's top-1 in ours 1.00/0.97/1.00, same top-1
    # 0.45/0.67/0.66, mean top-3 overlap 0.84/0.87/0.86. Saabas and SHAP differ by design (path
    # order vs all orderings) in which of the correlated amount features (habit mean, 30-day
    # mean, z-score) comes first — not in which features matter, which the first three checks pin.
    assert top1_in_shap_top3 >= 0.95
    assert shap_top1_in_ours >= 0.95
    assert same_top1 >= 0.40
    assert mean_overlap >= 0.80


def test_rows_with_missing_values_follow_scikit_learn():
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 3))
    y = (X[:, 0] + rng.normal(size=600) > 0.5).astype(int)
    X[rng.random(X.shape) < 0.2] = np.nan
    forest = RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0).fit(X, y)
    explainer = ForestExplainer.from_model(forest, ["a", "b", "c"])
    rows = X[:100]
    expected = forest.predict_proba(rows)[:, 1]
    np.testing.assert_allclose([explainer.explain(r).probability for r in rows], expected, atol=1e-12)
    np.testing.assert_allclose(explainer.bias + explainer.contributions(rows).sum(axis=1), expected, atol=1e-12)


def test_paths_use_float32_comparisons_like_scikit_learn():
    from sklearn.ensemble import RandomForestClassifier

    # 0.1 and its float64 neighbours collapse to one float32: sklearn cannot tell them apart.
    X = np.array([[0.1], [np.nextafter(0.1, 1)], [0.2], [0.3]] * 10)
    y = np.array([0, 1, 1, 1] * 10)
    forest = RandomForestClassifier(n_estimators=5, random_state=0, bootstrap=False).fit(X, y)
    explainer = ForestExplainer.from_model(forest, ["x"])
    for row in ([0.1], [np.nextafter(0.1, 1)], [0.15], [np.float32(0.15)]):
        assert explainer.explain(row).probability == pytest.approx(forest.predict_proba([row])[0, 1], abs=1e-12)


def test_saved_explainer_gives_the_same_contributions(model_and_rows, explainer):
    _, rows = model_and_rows
    loaded = ForestExplainer.from_bytes(explainer.to_bytes())
    assert loaded.feature_names == explainer.feature_names
    np.testing.assert_array_equal(loaded.contributions(rows), explainer.contributions(rows))
    assert loaded.bias == explainer.bias


def test_explain_features_takes_a_dict_in_any_order(model_and_rows, explainer):
    _, rows = model_and_rows
    features = dict(reversed(list(zip(NAMES, rows[0]))))
    explanation = explainer.explain_features(features)
    np.testing.assert_array_equal(explanation.contributions, explainer.explain(rows[0]).contributions)
    reasons = explanation.reasons(k=3)
    assert len(reasons) == 3 and all(r["feature"] in NAMES for r in reasons)


def test_bad_inputs_are_refused(model_and_rows, explainer):
    pipeline, rows = model_and_rows
    with pytest.raises(ValueError, match="feature values"):
        explainer.explain(rows[0][:-1])
    with pytest.raises(ValueError, match="names"):
        ForestExplainer.from_model(pipeline, NAMES[:-1])


# --- top_reasons and the text formatter -----------------------------------------------


def test_top_reasons_are_the_largest_positive_contributions():
    contributions = {"amount": 0.05, "is_night": 0.2, "customer_nb_tx_1d": -0.3, "terminal_risk_7d": 0.1}
    features = {"amount": 1250.0, "is_night": 1.0, "customer_nb_tx_1d": 3.0, "terminal_risk_7d": 0.4}
    reasons = top_reasons(contributions, features, k=2)
    assert reasons == [
        {"feature": "is_night", "value": 1.0, "contribution": 0.2, "direction": "raises",
         "text": "payment at night (00:00-06:59 UTC)"},
        {"feature": "terminal_risk_7d", "value": 0.4, "contribution": 0.1, "direction": "raises",
         "text": "terminal had 40% fraud in its 7-day window (known labels)"},
    ]


def test_fewer_positive_than_k_are_filled_with_the_largest_absolute():
    contributions = {"a": -0.01, "b": 0.002, "c": -0.3, "d": 0.0, "e": -0.05}
    features = dict.fromkeys(contributions, 1.0)
    reasons = top_reasons(contributions, features, k=3)
    assert [r["feature"] for r in reasons] == ["b", "c", "e"]
    assert [r["direction"] for r in reasons] == ["raises", "lowers", "lowers"]
    assert reasons[1]["contribution"] == -0.3


def test_features_that_played_no_part_are_never_reasons():
    reasons = top_reasons({"a": 0.0, "b": -0.1, "c": 0.0}, {"a": 1.0, "b": 2.0, "c": 3.0}, k=3)
    assert [r["feature"] for r in reasons] == ["b"]


def test_contributions_are_rounded_to_six_places():
    [reason] = top_reasons({"amount": 0.123456789}, {"amount": 10.0}, k=1)
    assert reason["contribution"] == 0.123457


@pytest.mark.parametrize("feature, value, text", [
    ("amount", 1250.0, "amount 1250.00"),
    ("amount_to_customer_mean_30d", 6.21, "amount is 6.2× the card's 30-day mean"),
    ("customer_nb_tx_1d", 3.0, "3 transactions on this card in the last day"),
    ("customer_nb_tx_7d", 1.0, "1 transaction on this card in the last 7 days"),
    ("customer_mean_amount_30d", 57.3, "card's mean amount over the last 30 days is 57.30"),
    ("terminal_nb_tx_30d", 12.0, "12 transactions at this terminal in its 30-day window (known labels)"),
    ("terminal_risk_7d", 0.4, "terminal had 40% fraud in its 7-day window (known labels)"),
    ("is_night", 1.0, "payment at night (00:00-06:59 UTC)"),
    ("is_night", 0.0, "payment in the daytime (07:00-23:59 UTC)"),
    ("is_weekend", 1.0, "payment on a weekend (UTC)"),
    ("terminal_days_since_fraud", 3.0, "terminal_days_since_fraud = 3"),
    ("customer_amount_zscore_30d", 2.345678, "customer_amount_zscore_30d = 2.34568"),
    ("customer_max_amount_7d", float("nan"), "customer_max_amount_7d = nan"),
])
def test_describe(feature, value, text):
    assert describe(feature, value) == text


def test_every_current_feature_has_its_own_sentence():
    for name in NAMES:
        assert not describe(name, 1.0).startswith(f"{name} ="), name


def test_night_text_matches_the_feature_definition():
    assert NIGHT_LAST_HOUR == 6, "update the is_night sentence in shared/explain.py"


def test_serving_modules_import_no_heavy_libraries():
    """Predict's cold start must stay fast: explain, rules and decide need no pandas,
    scikit-learn or matplotlib."""
    code = ("import sys, shared.explain, shared.rules, shared.decisions; "
            "print(sorted({'pandas', 'sklearn', 'matplotlib', 'scipy'} & set(sys.modules)))")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
