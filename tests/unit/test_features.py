"""Feature definitions on hand-built histories with known answers, and the fast pandas path
against an obviously-right row-by-row implementation of the bucketed windows."""
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from shared.features import (
    BUCKETS,
    CUSTOMER,
    DEFAULT_SPEC,
    TERMINAL,
    FeatureSpec,
    aggregate,
    compute_aggregates,
    compute_features,
    empty_aggregates,
    epoch_day,
    epoch_hour,
    features_for_one,
    finalize,
    union,
)

T0 = datetime(2026, 5, 4, 12, 30, tzinfo=timezone.utc)  # a Monday, half past noon


def frame(rows):
    return pd.DataFrame(rows, columns=["transaction_id", "timestamp", "customer_id", "terminal_id", "amount", "label"])


def test_customer_windows_are_whole_hours_plus_the_current_hour_so_far():
    history = frame([
        ("a", T0 - timedelta(days=40), "C", "T1", 100.0, 0),   # outside every window
        ("b", T0 - timedelta(days=10), "C", "T1", 30.0, 0),    # 30d only
        ("c", T0 - timedelta(days=3), "C", "T1", 20.0, 0),     # 7d and 30d
        ("d", T0 - timedelta(hours=2), "C", "T1", 10.0, 0),    # all windows
        ("e", T0, "C", "T1", 40.0, 0),
        ("x", T0 - timedelta(hours=1), "OTHER", "T1", 999.0, 0),
    ])
    f = compute_features(history).loc[4]
    assert f.customer_nb_tx_1d == 2 and f.customer_mean_amount_1d == pytest.approx(25.0)
    assert f.customer_nb_tx_7d == 3 and f.customer_mean_amount_7d == pytest.approx(70 / 3)
    assert f.customer_nb_tx_30d == 4 and f.customer_mean_amount_30d == pytest.approx(25.0)
    assert f.amount_to_customer_mean_30d == pytest.approx(40 / 25)


def test_customer_window_edge_is_the_hour_bucket():
    """The 1-day window is the 24 whole hours before the transaction's hour plus that hour so
    far: a row 24h30m earlier (hour 12 the day before) is inside, 25h earlier is not."""
    history = frame([
        ("in", T0 - timedelta(hours=24, minutes=30), "C", "T", 5.0, 0),   # 12:00 yesterday
        ("out", T0 - timedelta(hours=25), "C", "T", 6.0, 0),              # 11:30 yesterday
        ("now", T0, "C", "T", 7.0, 0),
    ])
    f = compute_features(history).loc[2]
    assert f.customer_nb_tx_1d == 2
    assert f.customer_nb_tx_7d == 3


def test_current_hour_counts_only_earlier_rows_in_time_then_id_order():
    history = frame([
        ("b", T0, "C", "T", 2.0, 0),
        ("a", T0, "C", "T", 4.0, 0),
        ("later", T0 + timedelta(minutes=5), "C", "T", 8.0, 0),
    ])
    f = compute_features(history)
    assert f.loc[1, "customer_nb_tx_1d"] == 1  # "a" sorts first: sees only itself
    assert f.loc[0, "customer_nb_tx_1d"] == 2
    assert f.loc[2, "customer_nb_tx_1d"] == 3


def test_terminal_windows_are_whole_days_before_the_label_delay():
    day = T0.replace(hour=0, minute=0)
    history = frame([
        ("r1", day - timedelta(days=2), "C1", "T", 1.0, 1),                     # inside the delay
        ("r2", day - timedelta(days=8) + timedelta(hours=23), "C2", "T", 1.0, 1),  # day B-8: the 1d window
        ("r3", day - timedelta(days=7) + timedelta(hours=1), "C2", "T", 1.0, 1),   # day B-7: still delayed
        ("r4", day - timedelta(days=10), "C3", "T", 1.0, 0),                    # 7d delayed window
        ("r5", day - timedelta(days=20), "C4", "T", 1.0, 1),                    # 30d delayed window
        ("r6", day - timedelta(days=20), "C4", "T", 1.0, np.nan),               # unknown counts as genuine
        ("now", T0, "C5", "T", 1.0, 0),
    ])
    f = compute_features(history).loc[6]
    assert (f.terminal_nb_tx_1d, f.terminal_risk_1d) == (1, 1.0)
    assert (f.terminal_nb_tx_7d, f.terminal_risk_7d) == (2, 0.5)
    assert (f.terminal_nb_tx_30d, f.terminal_risk_30d) == (4, 0.5)


def test_time_flags_in_utc():
    saturday_night = datetime(2026, 5, 9, 3, 0, tzinfo=timezone.utc)
    history = frame([("a", saturday_night, "C", "T", 1.0, 0), ("b", T0, "C2", "T", 1.0, 0)])
    f = compute_features(history)
    assert (f.loc[0, "is_weekend"], f.loc[0, "is_night"]) == (1.0, 1.0)
    assert (f.loc[1, "is_weekend"], f.loc[1, "is_night"]) == (0.0, 0.0)


def test_result_keeps_the_input_index_and_order():
    history = frame([("b", T0, "C", "T", 2.0, 0), ("a", T0 - timedelta(hours=1), "C", "T", 4.0, 0)])
    history.index = [10, 20]
    f = compute_features(history)
    assert list(f.index) == [10, 20] and list(f.columns) == DEFAULT_SPEC.names


def test_online_fallback_is_the_transaction_alone():
    f = features_for_one(empty_aggregates(), 50.0, T0)
    assert f["customer_nb_tx_30d"] == 1 and f["customer_mean_amount_30d"] == 50.0
    assert f["terminal_nb_tx_7d"] == 0 and f["terminal_risk_7d"] == 0.0
    assert list(f) == DEFAULT_SPEC.names


def test_spec_round_trip_and_refusals():
    spec = FeatureSpec(customer_windows=(1, 3), terminal_windows=(2,), delay_days=5)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    # Published before bucketed windows: no layout recorded, served with today's.
    legacy = {"customer_windows": [1, 7, 30], "terminal_windows": [1, 7, 30], "delay_days": 7}
    assert FeatureSpec.from_dict(legacy) == FeatureSpec() and DEFAULT_SPEC.buckets == BUCKETS
    # Groups added later default to off, so a stored spec keeps its meaning.
    assert FeatureSpec.from_dict(legacy).names == FeatureSpec().names and len(FeatureSpec().names) == 16
    with pytest.raises(ValueError, match="does not know"):
        FeatureSpec.from_dict({**legacy, "future_feature": True})
    with pytest.raises(ValueError, match="bucket layout"):
        FeatureSpec.from_dict({**legacy, "buckets": "customer-minute"})


def test_spec_round_trip_with_the_optional_groups():
    spec = FeatureSpec(customer_ratios=True, customer_habit_days=(30, 14), customer_recent_vs_habit=True,
                       terminal_fraud_run=True, terminal_recency=True)
    stored = spec.to_dict()
    assert stored["customer_habit_days"] == [30, 14]
    assert FeatureSpec.from_dict(stored) == spec
    assert FeatureSpec.from_dict(DEFAULT_SPEC.to_dict()) == DEFAULT_SPEC


@pytest.mark.parametrize("settings", [
    {"customer_habit_days": (7, 7)}, {"customer_habit_days": (31, 7)}, {"customer_habit_days": (30, 0)},
    {"customer_recent_vs_habit": True},  # needs the habit
    {"customer_habit_days": (30, 7), "customer_recent_vs_habit": True, "customer_windows": (30,)},
])
def test_spec_refuses_bad_groups(settings):
    with pytest.raises(ValueError):
        FeatureSpec(**settings)


def test_spec_history_days_and_shared_aggregates():
    assert DEFAULT_SPEC.history_days == 37
    other = FeatureSpec(terminal_windows=(7,), delay_days=3)
    names = {a.name for a in union(DEFAULT_SPEC, other)}
    # Same customer windows: shared; another delay: another terminal aggregate.
    assert len(names) == len(DEFAULT_SPEC.aggregates()) + 2


# --- optional groups -------------------------------------------------------------------

GROUPS = FeatureSpec(customer_ratios=True, customer_habit_days=(30, 7), customer_recent_vs_habit=True,
                     terminal_fraud_run=True, terminal_recency=True)


def test_ratios_over_every_customer_window():
    history = frame([
        ("a", T0 - timedelta(days=20), "C", "T", 10.0, 0),
        ("b", T0 - timedelta(days=3), "C", "T", 50.0, 0),
        ("c", T0 - timedelta(hours=2), "C", "T", 60.0, 0),
        ("now", T0, "C", "T", 100.0, 0),
    ])
    f = compute_features(history, FeatureSpec(customer_ratios=True)).loc[3]
    assert f.amount_to_customer_mean_1d == pytest.approx(100 / 80)
    assert f.amount_to_customer_mean_7d == pytest.approx(100 / 70)
    assert f.amount_to_customer_mean_30d == pytest.approx(100 / 55)


def test_habit_leaves_out_the_recent_days():
    """Habit (30, 7): hours [b - 720, b - 169]. A row 7 days + 1 hour back is habit; one
    exactly 7 days back (hour b - 168) is recent, as is everything after it."""
    history = frame([
        ("old", T0 - timedelta(days=31), "C", "T", 1000.0, 0),             # outside 30 days
        ("h1", T0 - timedelta(days=20), "C", "T", 10.0, 0),
        ("h2", T0 - timedelta(days=10), "C", "T", 30.0, 0),
        ("h3", T0 - timedelta(days=7, hours=1), "C", "T", 20.0, 0),
        ("r1", T0 - timedelta(days=7), "C", "T", 50.0, 0),                 # 7d window, not habit
        ("r2", T0 - timedelta(hours=2), "C", "T", 60.0, 0),                # 1d and 7d windows
        ("now", T0, "C", "T", 100.0, 0),
        ("x", T0 - timedelta(days=9), "OTHER", "T", 999.0, 0),
    ])
    f = compute_features(history, GROUPS).loc[6]
    assert f.customer_habit_nb_tx == 3 and f.customer_habit_mean_amount == pytest.approx(20.0)
    assert f.amount_to_customer_habit_mean == pytest.approx(5.0)
    std = np.sqrt((10**2 + 30**2 + 20**2) / 3 - 20**2)  # population std over the habit rows
    assert f.amount_customer_habit_zscore == pytest.approx(80 / std)
    assert f.amount_to_customer_habit_max == pytest.approx(100 / 30)
    # recent activity: earlier rows only (not the transaction itself) against the habit mean
    assert f.customer_max_amount_1d_to_habit_mean == pytest.approx(3.0)
    assert f.customer_mean_amount_1d_to_habit_mean == pytest.approx(3.0)
    assert f.customer_max_amount_7d_to_habit_mean == pytest.approx(3.0)
    assert f.customer_mean_amount_7d_to_habit_mean == pytest.approx(55 / 20)


def test_habit_fallbacks_are_finite_and_documented():
    history = frame([
        ("new", T0, "NEW", "T", 40.0, 0),                                  # no history at all
        ("s1", T0 - timedelta(days=10), "SAME", "T", 20.0, 0),
        ("s2", T0 - timedelta(days=9), "SAME", "T", 20.0, 0),
        ("s3", T0, "SAME", "T", 30.0, 0),                                  # habit without spread
        ("o1", T0 - timedelta(days=10), "ONE", "T", 20.0, 0),
        ("o2", T0, "ONE", "T", 30.0, 0),                                   # a single habit row
        ("y1", T0 - timedelta(days=2), "YOUNG", "T", 20.0, 0),
        ("y2", T0, "YOUNG", "T", 30.0, 0),                                 # recent rows, no habit
    ])
    f = compute_features(history, GROUPS)
    assert np.isfinite(f.to_numpy()).all()
    new = f.loc[0]
    assert (new.customer_habit_nb_tx, new.customer_habit_mean_amount) == (0, 0)
    assert (new.amount_to_customer_habit_mean, new.amount_customer_habit_zscore, new.amount_to_customer_habit_max) == (
        1, 0, 1)
    assert (new.customer_max_amount_7d_to_habit_mean, new.customer_mean_amount_7d_to_habit_mean) == (0, 0)
    # no spread: divide by 10 % of the habit mean
    assert f.loc[3, "amount_customer_habit_zscore"] == pytest.approx((30 - 20) / 2.0)
    assert f.loc[5, "amount_customer_habit_zscore"] == 0 and f.loc[5, "amount_to_customer_habit_mean"] == 1.5
    assert (f.loc[7, "customer_max_amount_7d_to_habit_mean"],
            f.loc[7, "customer_mean_amount_7d_to_habit_mean"]) == (1, 1)
    assert f.loc[7, "customer_max_amount_1d_to_habit_mean"] == 0  # no earlier row in the last day


def test_terminal_recency_within_the_delayed_window():
    """Delay 7, longest window 30: the fraud days known on day B are B-37 .. B-8."""
    day = T0.replace(hour=0, minute=0)
    history = frame([
        ("f_old", day - timedelta(days=40), "C1", "T", 1.0, 1),     # before the window
        ("f1", day - timedelta(days=20), "C1", "T", 1.0, 1),
        ("g1", day - timedelta(days=15), "C1", "T", 1.0, 0),
        ("f2", day - timedelta(days=9), "C1", "T", 1.0, 1),
        ("g2", day - timedelta(days=8), "C1", "T", 1.0, 0),
        ("f_late", day - timedelta(days=3), "C1", "T", 1.0, 1),     # label not known yet
        ("now", T0, "C2", "T", 1.0, 0),
        ("clean", T0, "C2", "CLEAN", 1.0, 0),
    ])
    f = compute_features(history, GROUPS)
    assert (f.loc[6, "terminal_days_since_last_fraud"], f.loc[6, "terminal_days_since_first_fraud"],
            f.loc[6, "terminal_fraud_run_days"]) == (9, 20, 12)
    # none known: one day past the window, run 0
    assert (f.loc[7, "terminal_days_since_last_fraud"], f.loc[7, "terminal_days_since_first_fraud"],
            f.loc[7, "terminal_fraud_run_days"]) == (38, 38, 0)


def test_only_recency_needs_the_day():
    arrays = {key: np.array([value]) for key, value in empty_aggregates(GROUPS).items()}
    with pytest.raises(ValueError, match="day"):
        finalize(arrays, np.array([1.0]), np.array([0]), np.array([12]), GROUPS)
    assert finalize(arrays, np.array([1.0]), np.array([0]), np.array([12]), GROUPS,
                    day=np.array([epoch_day(epoch_hour(T0))]))["terminal_days_since_last_fraud"][0] == 38
    # the run of fraud does not: the default spec is computed from aggregates alone
    assert not DEFAULT_SPEC.terminal_recency and DEFAULT_SPEC.terminal_fraud_run
    arrays = {key: np.array([value]) for key, value in empty_aggregates(DEFAULT_SPEC).items()}
    finalized = finalize(arrays, np.array([1.0]), np.array([0]), np.array([12]), DEFAULT_SPEC)
    assert finalized["terminal_fraud_run_days"][0] == 0


def test_run_and_recency_share_their_aggregates():
    run, both = FeatureSpec(terminal_fraud_run=True), FeatureSpec(terminal_fraud_run=True, terminal_recency=True)
    assert run.aggregates() == both.aggregates() == FeatureSpec(terminal_recency=True).aggregates()
    assert run.names[-1] == "terminal_fraud_run_days" and "terminal_days_since_last_fraud" not in run.names


def test_online_features_equal_offline_ones_for_every_group():
    """features_for_one (serving) on a row's aggregates gives compute_features' row."""
    rng = np.random.default_rng(3)
    n = 300
    history = pd.DataFrame({
        "transaction_id": [f"t{i:04d}" for i in range(n)],
        "timestamp": pd.Timestamp("2026-03-01", tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 50 * 24 * 60, n)),
                                                                           unit="min"),
        "customer_id": rng.choice(["C1", "C2", "C3"], n),
        "terminal_id": rng.choice(["T1", "T2"], n),
        "amount": np.round(rng.gamma(2, 30, n), 2),
        "label": rng.choice([0.0, 1.0], n, p=[0.8, 0.2]),
    })
    spec = FeatureSpec(terminal_windows=(1, 3, 14), customer_ratios=True, customer_habit_days=(20, 5),
                       customer_recent_vs_habit=True, terminal_fraud_run=True, terminal_recency=True)
    offline = compute_features(history, spec)
    aggregates = compute_aggregates(history, spec)
    for i in (n - 1, n // 2, 40):
        one = features_for_one({k: v[i] for k, v in aggregates.items()}, history.amount[i],
                               history.timestamp[i].to_pydatetime(), spec)
        np.testing.assert_allclose(list(one.values()), offline.loc[i].to_numpy(), rtol=1e-12)
    assert (offline["terminal_fraud_run_days"] > 0).any() and (offline["customer_habit_nb_tx"] > 0).any()


def test_default_spec_is_finite_on_an_empty_history():
    f = features_for_one(empty_aggregates(DEFAULT_SPEC), 50.0, T0, DEFAULT_SPEC)
    assert all(np.isfinite(value) for value in f.values())


# --- the fast path against a slow, obviously-right one -----------------------------------

ALL_MEASURES = [
    aggregate(CUSTOMER, "count", 24, 0), aggregate(CUSTOMER, "sum", 24 * 7, 0),
    aggregate(CUSTOMER, "sumsq", 24 * 30, 0), aggregate(CUSTOMER, "max", 24 * 30, 0),
    aggregate(CUSTOMER, "max", 24 * 30, 24 * 7 + 1), aggregate(CUSTOMER, "sum", 24 * 30, 24 * 7 + 1),
    # the habit window's count and spread, and the recent windows' largest amounts
    aggregate(CUSTOMER, "count", 24 * 30, 24 * 7 + 1), aggregate(CUSTOMER, "sumsq", 24 * 30, 24 * 7 + 1),
    aggregate(CUSTOMER, "max", 24, 0), aggregate(CUSTOMER, "max", 24 * 7, 0), aggregate(CUSTOMER, "count", 24 * 3, 0),
    aggregate(TERMINAL, "last_fraud_day", 10, 8), aggregate(TERMINAL, "first_fraud_day", 14, 1),
    aggregate(TERMINAL, "count", 14, 8), aggregate(TERMINAL, "frauds", 37, 8),
    aggregate(TERMINAL, "last_fraud_day", 37, 8), aggregate(TERMINAL, "first_fraud_day", 37, 8),
]


def slow_aggregates(history: pd.DataFrame, wanted) -> dict[str, np.ndarray]:
    """The bucketed window definitions, row by row."""
    h = history.reset_index(drop=True)
    ts = pd.to_datetime(h["timestamp"], utc=True)
    hour = np.array([epoch_hour(t.to_pydatetime()) for t in ts])
    day = hour // 24
    ids = h["transaction_id"].to_numpy()
    fraud = pd.to_numeric(h["label"], errors="coerce").fillna(0).to_numpy() == 1
    out = {a.name: np.zeros(len(h)) for a in wanted}
    for i in range(len(h)):
        for a in wanted:
            if a.entity == CUSTOMER:
                rows = (h["customer_id"].to_numpy() == h["customer_id"][i]) & (hour >= hour[i] - a.start) & (
                    hour <= hour[i] - a.end)
                if a.end == 0:
                    earlier = (ts < ts[i]).to_numpy() | ((ts == ts[i]).to_numpy() & (ids < ids[i]))
                    rows &= (hour < hour[i]) | earlier
                values = h["amount"].to_numpy()[rows]
                out[a.name][i] = {"count": rows.sum(), "sum": values.sum(), "sumsq": (values ** 2).sum(),
                                  "max": values.max() if len(values) else np.nan}[a.measure]
            else:
                rows = (h["terminal_id"].to_numpy() == h["terminal_id"][i]) & (day >= day[i] - a.start) & (
                    day <= day[i] - a.end)
                frauds = rows & fraud
                out[a.name][i] = {"count": rows.sum(), "frauds": frauds.sum(),
                                  "last_fraud_day": day[frauds].max() if frauds.any() else np.nan,
                                  "first_fraud_day": day[frauds].min() if frauds.any() else np.nan}[a.measure]
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_aggregates_equal_the_slow_definition(seed):
    rng = np.random.default_rng(seed)
    n = 400
    start = pd.Timestamp("2026-03-01", tz="UTC")
    history = pd.DataFrame({
        "transaction_id": [f"t{rng.integers(0, 10**6):07d}-{i}" for i in range(n)],
        # Coarse times: ties on the same second and many rows per hour bucket.
        "timestamp": start + pd.to_timedelta(rng.integers(0, 60 * 24 * 6, n) * 10, unit="min"),
        "customer_id": rng.choice(["C1", "C2", "C3", "C4"], n),
        "terminal_id": rng.choice(["T1", "T2", "T3"], n),
        "amount": np.round(rng.gamma(2, 30, n), 2),
        "label": rng.choice([0.0, 1.0, np.nan], n, p=[0.7, 0.1, 0.2]),
    })
    fast = compute_aggregates(history, wanted=ALL_MEASURES)
    slow = slow_aggregates(history, ALL_MEASURES)
    for a in ALL_MEASURES:
        np.testing.assert_allclose(fast[a.name], slow[a.name], rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=a.name)


EVERY_GROUP = FeatureSpec(terminal_windows=(1, 3, 7, 14, 30), customer_ratios=True, customer_habit_days=(30, 7),
                          customer_recent_vs_habit=True, terminal_fraud_run=True, terminal_recency=True)


@pytest.mark.parametrize("spec", [DEFAULT_SPEC, FeatureSpec(), EVERY_GROUP])
def test_one_row_on_python_numbers_equals_the_array_path_exactly(spec):
    """Predict runs finalize on one row's Python floats; training and the backtest on arrays.
    Same expressions, so the same values to the bit — on empty, single-row and busy windows."""
    rng = np.random.default_rng(7)
    rows = 400
    arrays = {}
    for a in spec.aggregates():
        if a.measure in ("count", "frauds"):
            values = rng.choice([0.0, 1.0, 2.0, 5.0, 40.0], rows)
        elif a.measure in ("max", "last_fraud_day", "first_fraud_day"):
            values = np.where(rng.random(rows) < 0.3, np.nan, rng.uniform(0, 20_500, rows))
        else:
            values = np.where(rng.random(rows) < 0.2, 0.0, rng.uniform(0, 5_000, rows))
        arrays[a.name] = values
    amount = np.where(rng.random(rows) < 0.1, 0.0, rng.uniform(0, 2_000, rows))
    dayofweek, hour = rng.integers(0, 7, rows), rng.integers(0, 24, rows)
    day = rng.integers(20_400, 20_500, rows)
    together = finalize(arrays, amount, dayofweek, hour, spec, day=day)
    for i in range(rows):
        alone = finalize({k: v[i] for k, v in arrays.items()}, float(amount[i]), int(dayofweek[i]), int(hour[i]),
                         spec, day=int(day[i]))
        for name in spec.names:
            assert isinstance(alone[name], float), name
            assert alone[name] == together[name][i] or (np.isnan(alone[name]) and np.isnan(together[name][i])), \
                (name, i, alone[name], together[name][i])
