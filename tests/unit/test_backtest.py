"""Unit tests of the out-of-time backtest: fold arithmetic, the handbook's evaluation rules
on hand-built frames with known answers, option parsing, and a tiny end-to-end run."""
from __future__ import annotations

import argparse
import json
from datetime import date

import numpy as np
import pytest

from shared.backtest import (
    ABLATION_SPEC,
    BASELINE_FEATURES,
    FEATURE_SETS,
    HANDBOOK_FEATURES,
    BacktestConfig,
    BacktestDataError,
    capped_training,
    card_precision_at_k,
    check_coverage,
    day_number,
    day_numbers,
    fold_windows,
    known_compromised,
)
from shared.backtest_cli import add_arguments, feature_spec, main, params_from_args, resolve_features
from shared.features import DEFAULT_SPEC, FEATURE_NAMES, FeatureSpec
from shared.simulator import SimulationConfig, simulate_transactions, write_csv
from shared.training import TrainingParams


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


# --- fold windows ---------------------------------------------------------------------


def test_fold_windows_default_layout_steps_back_a_week_per_fold():
    windows = [w.as_dict() for w in fold_windows(date(2026, 3, 15), folds=3)]
    assert windows[0] == {"train": ["2026-03-15", "2026-03-21"], "delay": ["2026-03-22", "2026-03-28"],
                          "test": ["2026-03-29", "2026-04-04"]}
    assert windows[1] == {"train": ["2026-03-08", "2026-03-14"], "delay": ["2026-03-15", "2026-03-21"],
                          "test": ["2026-03-22", "2026-03-28"]}
    assert windows[2]["train"] == ["2026-03-01", "2026-03-07"]
    assert windows[2]["test"] == ["2026-03-15", "2026-03-21"]


def test_fold_windows_custom_lengths_and_no_delay():
    (first, second) = fold_windows(date(2026, 1, 31), folds=2, train_days=3, delay_days=0, test_days=2,
                                   step_days=10)
    assert (first.train_start, first.train_end, first.test_start, first.test_end) == (
        date(2026, 1, 31), date(2026, 2, 3), date(2026, 2, 3), date(2026, 2, 5))
    assert first.as_dict()["delay"] is None
    assert second.train_start == date(2026, 1, 21)
    assert second.as_dict()["test"] == ["2026-01-24", "2026-01-25"]


def test_fold_windows_rejects_nonsense():
    with pytest.raises(ValueError):
        fold_windows(date(2026, 1, 1), folds=0)
    with pytest.raises(ValueError):
        fold_windows(date(2026, 1, 1), delay_days=-1)


def test_day_numbers_are_utc_calendar_days():
    days = day_numbers(["2026-03-15T00:00:00Z", "2026-03-15T23:59:59Z", "2026-03-16T01:00:00+02:00"])
    assert days.tolist() == [day_number(date(2026, 3, 15))] * 3


def test_check_coverage_errors_when_a_fold_falls_outside_the_history_and_warns_on_short_warmup():
    config = BacktestConfig(train_start=date(2026, 3, 15), folds=2)  # needs 03-08 .. 04-04
    covered = np.arange(day_number(date(2026, 3, 1)), day_number(date(2026, 4, 4)) + 1)
    assert check_coverage(covered, config, warmup_days=7) == []
    assert check_coverage(covered, config, warmup_days=37)  # only 7 days of history before training
    with pytest.raises(BacktestDataError, match="2026-04-04"):
        check_coverage(covered[:-1], config, warmup_days=0)


# --- known compromised customers ------------------------------------------------------


def test_known_compromised_uses_frauds_from_first_training_day_to_d_minus_delay_minus_one():
    # first training day 10, delay 2: on day D the frauds of days 10 .. D-3 are known.
    rows = [  # (day, customer, label)
        (9, "before", 1), (13, "before", 0),           # fraud before the training window: never counts
        (10, "train", 1), (12, "train", 0), (13, "train", 0),    # known from day 13 on
        (12, "delay", 1), (14, "delay", 0), (15, "delay", 0),    # known from day 15 on
        (14, "test", 1), (16, "test", 0), (17, "test", 0),       # own test-day fraud: known from day 17
        (10, "unlabeled", np.nan), (15, "unlabeled", 0),         # an unknown label is not a fraud
        (11, "genuine", 0), (16, "genuine", 0),
    ]
    day, customer, label = (np.array(column) for column in zip(*rows))
    known = known_compromised(day, customer, label.astype(float), first_train_day=10, delay_days=2)
    expected = {(13, "before"): False, (12, "train"): False, (13, "train"): True, (14, "delay"): False,
                (15, "delay"): True, (14, "test"): False, (16, "test"): False, (17, "test"): True,
                (15, "unlabeled"): False, (16, "genuine"): False}
    for (d, c), want in expected.items():
        position = int(np.flatnonzero((day == d) & (customer == c))[0])
        assert known[position] == want, (d, c)


# --- card precision@k -----------------------------------------------------------------


def _card_example():
    rows = [  # (day, customer, label, score)
        # day 1: a scores 0.9 (its fraud scores low, but the card's score is its max) -> top 2 = a, b
        (1, "a", 0, 0.9), (1, "a", 1, 0.1), (1, "b", 0, 0.8), (1, "c", 1, 0.7),
        # day 2: a was detected on day 1 and is dropped; c, d, e tie -> lower ids first: c, d
        (2, "a", 1, 0.95), (2, "c", 1, 0.6), (2, "d", 0, 0.6), (2, "e", 0, 0.6),
        # day 3: a and c (detected) are dropped, so the top 2 are the genuine b and d
        (3, "a", 1, 0.99), (3, "c", 1, 0.98), (3, "b", 0, 0.2), (3, "d", 0, 0.1),
    ]
    return (np.array(column) for column in zip(*rows))


def test_card_precision_at_k_on_a_hand_built_example():
    day, customer, label, score = _card_example()
    mean, daily = card_precision_at_k(day, customer, label.astype(float), score.astype(float), k=2)
    assert daily == [0.5, 0.5, 0.0]
    assert mean == pytest.approx(1 / 3)


def test_card_precision_divides_by_k_even_when_fewer_customers_remain():
    mean, daily = card_precision_at_k(np.array([5, 5]), np.array(["x", "y"]), np.array([1.0, 0.0]),
                                      np.array([0.2, 0.9]), k=100)
    assert daily == [0.01] and mean == pytest.approx(0.01)


def test_card_precision_without_days_is_nan():
    mean, daily = card_precision_at_k(np.array([], int), np.array([], str), np.array([]), np.array([]))
    assert np.isnan(mean) and daily == []


# --- options --------------------------------------------------------------------------


def test_model_options_left_out_keep_training_params_defaults():
    args = parse("--data", "x.csv", "--train-start", "2026-03-15")
    assert params_from_args(args) == TrainingParams()
    assert (args.train_days, args.delay_days, args.test_days, args.folds, args.top_k) == (7, 7, 7, 1, 100)


def test_model_options_override_and_accept_none():
    args = parse("--data", "x.csv", "--train-start", "2026-03-15", "--no-smote", "--class-weight",
                 "balanced_subsample", "--max-depth", "none", "--max-samples", "none", "--n-estimators", "50",
                 "--seed", "3")
    params = params_from_args(args)
    assert (params.smote_ratio, params.class_weight, params.max_depth, params.max_samples,
            params.n_estimators, params.random_state) == (None, "balanced_subsample", None, None, 50, 3)
    assert params_from_args(parse("--data", "x", "--train-start", "2026-01-01",
                                  "--smote-ratio", "0.3")).smote_ratio == 0.3
    for text, value in (("sqrt", "sqrt"), ("log2", "log2"), ("0.4", 0.4), ("none", None)):
        assert params_from_args(parse("--data", "x", "--train-start", "2026-01-01",
                                      "--max-features", text)).max_features == value


def test_bad_options_are_rejected():
    with pytest.raises(SystemExit):
        parse("--data", "x.csv", "--train-start", "15/03/2026")
    with pytest.raises(SystemExit):
        parse("--data", "x.csv", "--train-start", "2026-03-15", "--class-weight", "heavy")
    with pytest.raises(SystemExit):
        parse("--data", "x.csv", "--train-start", "2026-03-15", "--smote-ratio", "2")
    with pytest.raises(SystemExit):
        parse("--data", "x.csv", "--train-start", "2026-03-15", "--max-features", "all")


def test_feature_sets():
    assert resolve_features("full") == FEATURE_NAMES == DEFAULT_SPEC.names
    assert resolve_features("baseline") == BASELINE_FEATURES
    assert resolve_features("v1") == FeatureSpec().names and len(FeatureSpec().names) == 16
    assert "amount_to_customer_mean_30d" not in HANDBOOK_FEATURES
    assert len(HANDBOOK_FEATURES) == 15 and set(HANDBOOK_FEATURES) < set(FeatureSpec().names)
    assert resolve_features("amount, terminal_risk_7d") == ["amount", "terminal_risk_7d"]
    assert resolve_features("customer_habit_nb_tx") == ["customer_habit_nb_tx"]
    with pytest.raises(BacktestDataError):
        resolve_features("amount,no_such_feature")
    with pytest.raises(BacktestDataError):  # not computed by that spec
        resolve_features("customer_habit_nb_tx", FeatureSpec())


def test_every_named_set_is_computed_by_the_ablation_spec_and_groups_add_to_v1():
    for name, names in FEATURE_SETS.items():
        assert set(names) <= set(ABLATION_SPEC.names), name
        assert len(set(names)) == len(names), name
    v1 = set(FEATURE_SETS["v1"])
    for name in ("v1+ratios", "v1+habit", "v1+habit+recent", "v1+terminal_windows", "v1+recency", "v1+run"):
        assert v1 < set(FEATURE_SETS[name]), name
    assert set(FEATURE_SETS["all-recency"]) == set(ABLATION_SPEC.names) - {
        "terminal_days_since_last_fraud", "terminal_days_since_first_fraud", "terminal_fraud_run_days"}
    assert set(FEATURE_SETS["all-habit+recent"]) == set(FEATURE_SETS["all"]) - (
        set(FEATURE_SETS["v1+habit+recent"]) - v1)


def test_the_computed_spec_is_the_default_when_it_suffices():
    assert feature_spec(FEATURE_SETS["full"], 7) == DEFAULT_SPEC
    assert feature_spec(FEATURE_SETS["v1"], 3) == FeatureSpec.from_dict({**DEFAULT_SPEC.to_dict(), "delay_days": 3})
    assert feature_spec(FEATURE_SETS["all"], 7) == ABLATION_SPEC
    assert feature_spec(FEATURE_SETS["v1+habit"], 7, {"customer_habit_days": [20, 5]}).customer_habit_days == (20, 5)
    with pytest.raises(SystemExit):
        parse("--data", "x.csv", "--train-start", "2026-03-15", "--spec", "[1, 2]")


# --- end to end -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    frame = simulate_transactions(SimulationConfig(n_customers=300, n_terminals=600, n_days=60,
                                                   start_date="2026-01-01", seed=5))
    path = tmp_path_factory.mktemp("backtest") / "history.csv"
    write_csv(frame, path)
    return path


def test_end_to_end_prints_a_table_and_ends_with_the_json_summary(small_csv, capsys):
    args = parse("--data", str(small_csv), "--train-start", "2026-02-05", "--folds", "2",
                 "--n-estimators", "10", "--n-jobs", "1")
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("mean ± std") for line in lines)
    summary = json.loads(lines[-1])
    assert set(summary) >= {"folds", "mean", "std", "config"}
    assert [fold["fold"] for fold in summary["folds"]] == [0, 1]
    assert summary["folds"][0]["train"] == ["2026-02-05", "2026-02-11"]
    assert summary["folds"][1]["test"] == ["2026-02-12", "2026-02-18"]
    metrics = ("auc_roc", "average_precision", "card_precision_at_100")
    for key in metrics:
        assert set(summary["mean"]) >= set(metrics) and set(summary["std"]) >= set(metrics)
        values = [fold[key] for fold in summary["folds"]]
        assert all(0.0 <= value <= 1.0 for value in values)
        assert summary["mean"][key] == pytest.approx(np.mean(values))
        assert summary["std"][key] == pytest.approx(np.std(values, ddof=1))
    fold = summary["folds"][0]
    assert fold["train_rows"] > 0 and fold["test_rows"] > 0 and fold["removed_known_compromised_rows"] > 0
    assert len(fold["card_precision_at_100_per_day"]) == 7
    assert summary["config"]["params"]["n_estimators"] == 10
    assert summary["config"]["features"] == FEATURE_NAMES


def test_end_to_end_with_a_named_group_and_spec_settings(small_csv, capsys):
    args = parse("--data", str(small_csv), "--train-start", "2026-02-05", "--features", "v1+habit+recent",
                 "--spec", '{"customer_habit_days": [21, 14]}', "--n-estimators", "5", "--n-jobs", "1")
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["config"]["features"] == FEATURE_SETS["v1+habit+recent"]
    assert summary["config"]["feature_spec"]["customer_habit_days"] == [21, 14]
    # a spec the features cannot come from is refused before any work
    args = parse("--data", str(small_csv), "--train-start", "2026-02-05", "--features", "v1+habit",
                 "--spec", '{"customer_habit_days": [5, 20]}')
    assert main(args) == 2


def test_folds_outside_the_history_exit_with_2(small_csv, capsys):
    args = parse("--data", str(small_csv), "--train-start", "2026-02-25")
    assert main(args) == 2
    assert "history covers" in capsys.readouterr().err


def test_a_capped_backtest_trains_on_the_rows_a_capped_retrain_would():
    from shared.storage.training_data import GUARD_START

    rng = np.random.default_rng(0)
    keys = rng.integers(0, 1 << 31, 50_000)
    labels = (rng.random(50_000) < 0.01).astype(np.float64)
    train = rng.random(50_000) < 0.8
    kept = capped_training(train, labels, keys, 10_000)
    assert not (kept & ~train).any() and not (kept & (keys >= GUARD_START)).any()  # guard rows never train
    population = train & (keys < GUARD_START)
    assert (kept & (labels == 1)).sum() == (population & (labels == 1)).sum()  # every fraud
    assert 9_800 <= kept.sum() <= 10_000
    # genuine rows by key: the kept ones are exactly those below a cut
    genuine = population & (labels == 0)
    assert keys[kept & genuine].max() < keys[genuine & ~kept].min()
    assert (capped_training(train, labels, keys, 10_000) == kept).all()  # deterministic
    assert (capped_training(train, labels, keys, 10**9) == population).all()  # a cap that does not bind


def test_end_to_end_with_a_training_cap(small_csv, capsys):
    base = ("--data", str(small_csv), "--train-start", "2026-02-05", "--n-estimators", "5", "--n-jobs", "1")
    assert main(parse(*base)) == 0
    everything = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["folds"][0]
    assert main(parse(*base, "--max-train-rows", "2000")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    capped = summary["folds"][0]
    assert summary["config"]["max_train_rows"] == 2000
    assert everything["train_rows"] > 2000 >= capped["train_rows"] > 1900
    assert everything["train_frauds"] >= capped["train_frauds"] >= 0.9 * everything["train_frauds"]
    assert capped["test_rows"] == everything["test_rows"]  # the test is never sampled
