"""Offline feature definitions on hand-built histories with known answers."""
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from shared.features import (
    DEFAULT_SPEC,
    FeatureSpec,
    compute_features,
    empty_aggregates,
    features_for_one,
)

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=timezone.utc)  # a Monday


def frame(rows):
    return pd.DataFrame(rows, columns=["transaction_id", "timestamp", "customer_id", "terminal_id", "amount", "label"])


def test_customer_windows_include_the_transaction_and_exclude_older_rows():
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


def test_window_edge_is_exclusive_at_start():
    history = frame([("a", T0 - timedelta(days=1), "C", "T", 5.0, 0), ("b", T0, "C", "T", 7.0, 0)])
    f = compute_features(history).loc[1]
    assert f.customer_nb_tx_1d == 1  # (t - 1d, t] excludes a row exactly one day earlier
    assert f.customer_nb_tx_7d == 2


def test_terminal_windows_are_delayed_and_use_true_labels():
    history = frame([
        ("r1", T0 - timedelta(days=2), "C1", "T", 1.0, 1),     # inside the delay: unknown yet
        ("r2", T0 - timedelta(days=7, hours=1), "C2", "T", 1.0, 1),   # 1d delayed window
        ("r3", T0 - timedelta(days=10), "C3", "T", 1.0, 0),    # 7d delayed window
        ("r4", T0 - timedelta(days=20), "C4", "T", 1.0, 1),    # 30d delayed window
        ("r5", T0 - timedelta(days=20), "C4", "T", 1.0, np.nan),  # unknown label counts as genuine
        ("now", T0, "C5", "T", 1.0, 0),
    ])
    f = compute_features(history).loc[5]
    assert (f.terminal_nb_tx_1d, f.terminal_risk_1d) == (1, 1.0)
    assert (f.terminal_nb_tx_7d, f.terminal_risk_7d) == (2, 0.5)
    assert (f.terminal_nb_tx_30d, f.terminal_risk_30d) == (4, 0.5)


def test_time_flags_in_utc():
    saturday_night = datetime(2026, 5, 9, 3, 0, tzinfo=timezone.utc)
    history = frame([("a", saturday_night, "C", "T", 1.0, 0), ("b", T0, "C2", "T", 1.0, 0)])
    f = compute_features(history)
    assert (f.loc[0, "is_weekend"], f.loc[0, "is_night"]) == (1.0, 1.0)
    assert (f.loc[1, "is_weekend"], f.loc[1, "is_night"]) == (0.0, 0.0)


def test_ties_are_ordered_by_transaction_id():
    history = frame([("b", T0, "C", "T", 2.0, 0), ("a", T0, "C", "T", 4.0, 0)])
    f = compute_features(history)
    assert f.loc[1, "customer_nb_tx_1d"] == 1  # "a" sorts first: sees only itself
    assert f.loc[0, "customer_nb_tx_1d"] == 2


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


def test_spec_history_days():
    assert DEFAULT_SPEC.history_days == 37
    assert FeatureSpec(customer_windows=(1,), terminal_windows=(1,), delay_days=0).history_days == 1
