"""Unit tests of the labeled transaction simulator (small populations, well under a second each)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.simulator import (
    COLUMNS,
    CSV_COLUMNS,
    LARGE_AMOUNT,
    SimulationConfig,
    simulate_for_volume,
    simulate_transactions,
    write_csv,
)

SMALL = SimulationConfig(n_customers=200, n_terminals=400, n_days=30, seed=7)
# Fraud events per day are absolute counts, so a small population gets a high fraud rate;
# that is fine for checking each mechanism, not for checking the rate (see test_fraud_rate_*).
MEDIUM = SimulationConfig(n_customers=600, n_terminals=1200, n_days=60, seed=11)


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return simulate_transactions(SMALL)


@pytest.fixture(scope="module")
def medium() -> pd.DataFrame:
    return simulate_transactions(MEDIUM)


def test_same_seed_gives_identical_frame(small):
    pd.testing.assert_frame_equal(simulate_transactions(SMALL), small)


def test_different_seed_gives_different_frame(small):
    other = simulate_transactions(SimulationConfig(n_customers=200, n_terminals=400, n_days=30, seed=8))
    assert not (len(other) == len(small) and other["amount"].equals(small["amount"]))
    assert other["transaction_id"].iloc[0].startswith("sim-8-")


def test_columns_and_dtypes(small):
    assert tuple(small.columns) == COLUMNS
    assert str(small["timestamp"].dtype) == "datetime64[ns, UTC]"
    for column in ("transaction_id", "customer_id", "terminal_id"):
        assert pd.api.types.is_string_dtype(small[column])
    assert small["amount"].dtype == np.float64
    assert small["label"].dtype == np.int8
    assert small["fraud_scenario"].dtype == np.int8
    assert isinstance(small.index, pd.RangeIndex) and small.index[0] == 0


def test_identifier_formats(small):
    assert small["transaction_id"].str.fullmatch(r"sim-7-\d{9}").all()
    assert small["customer_id"].str.fullmatch(r"C\d{6}").all()
    assert small["terminal_id"].str.fullmatch(r"T\d{6}").all()


def test_sorted_by_time_with_unique_ids_within_the_horizon(small):
    assert small["timestamp"].is_monotonic_increasing
    assert small["transaction_id"].is_unique
    # Ids follow the time order, so they are reproducible and sortable.
    assert small["transaction_id"].is_monotonic_increasing
    assert small["timestamp"].min() >= pd.Timestamp("2026-04-01", tz="UTC")
    assert small["timestamp"].max() < pd.Timestamp("2026-04-01", tz="UTC") + pd.Timedelta(days=SMALL.n_days)


def test_amounts_are_positive_cents(small):
    amounts = small["amount"].to_numpy()
    assert (amounts > 0).all()
    np.testing.assert_allclose(amounts * 100, np.round(amounts * 100), atol=1e-6)


def test_label_is_set_exactly_for_fraud_scenarios(small):
    assert set(small["label"].unique()) <= {0, 1}
    assert set(small["fraud_scenario"].unique()) <= {0, 1, 2, 3, 4}
    assert ((small["label"] == 1) == (small["fraud_scenario"] != 0)).all()


def test_every_scenario_occurs(medium):
    assert set(medium["fraud_scenario"].unique()) == {0, 1, 2, 3, 4}


def test_large_amounts_are_always_fraud(medium):
    assert (medium.loc[medium["amount"] > LARGE_AMOUNT, "label"] == 1).all()
    assert (medium.loc[medium["fraud_scenario"] == 1, "amount"] > LARGE_AMOUNT).all()


def test_compromised_terminal_frauds_sit_on_few_terminals(medium):
    by_terminal = medium[medium["fraud_scenario"] == 2].groupby("terminal_id").size()
    # At most one new terminal per compromise event; most terminals are never hit.
    assert len(by_terminal) <= MEDIUM.compromised_terminals_per_day * MEDIUM.n_days
    assert len(by_terminal) < 0.15 * medium["terminal_id"].nunique()
    # A compromised terminal loses all its transactions of the day, not one in a while.
    day = medium["timestamp"].dt.floor("D")
    hit = medium.assign(day=day)[medium["fraud_scenario"] == 2][["terminal_id", "day"]].drop_duplicates()
    same_day = medium.assign(day=day).merge(hit, on=["terminal_id", "day"])
    assert (same_day["label"] == 1).all()


def test_compromised_cards_are_few_with_inflated_amounts(medium):
    card_fraud = medium[medium["fraud_scenario"] == 3]
    assert card_fraud["customer_id"].nunique() <= MEDIUM.compromised_customers_per_day * MEDIUM.n_days
    genuine_median = medium.loc[medium["label"] == 0, "amount"].median()
    assert card_fraud["amount"].median() > 2 * genuine_median


def test_card_testing_bursts_of_small_amounts_then_a_large_one(medium):
    bursts = medium[medium["fraud_scenario"] == 4]
    assert len(bursts) > 0
    for _, burst in bursts.groupby(["customer_id", "terminal_id", bursts["timestamp"].dt.floor("D")]):
        burst = burst.sort_values("timestamp")
        assert len(burst) >= 4
        assert burst["timestamp"].iloc[-1] - burst["timestamp"].iloc[0] < pd.Timedelta(hours=1)
        assert (burst["amount"].iloc[:-1] < 5).all()
        assert burst["amount"].iloc[-1] >= 100


def test_fraud_rate_is_realistic():
    frame = simulate_for_volume(150_000, seed=3, n_days=120)
    assert 0.004 <= frame["label"].mean() <= 0.02


@pytest.mark.parametrize(("count", "n_days"), [(0, 183), (1, 183), (5_000, 1), (20_000, 183)])
def test_simulate_for_volume_returns_the_requested_count(count, n_days):
    frame = simulate_for_volume(count, seed=1, n_days=n_days)
    assert len(frame) == count
    assert tuple(frame.columns) == COLUMNS
    assert frame["timestamp"].is_monotonic_increasing


def test_simulate_for_volume_is_deterministic():
    pd.testing.assert_frame_equal(simulate_for_volume(3_000, seed=4), simulate_for_volume(3_000, seed=4))


def test_start_date_is_a_utc_day():
    frame = simulate_transactions(SimulationConfig(n_customers=50, n_terminals=100, n_days=2,
                                                   start_date="2026-11-23T15:30:00+02:00"))
    assert frame["timestamp"].min() >= pd.Timestamp("2026-11-23", tz="UTC")
    assert frame["timestamp"].max() < pd.Timestamp("2026-11-25", tz="UTC")


def test_write_csv_round_trips(small, tmp_path):
    path = tmp_path / "transactions.csv"
    write_csv(small, path)

    header, first = path.read_text().splitlines()[:2]
    assert header == ",".join(CSV_COLUMNS)
    assert first.split(",")[1].endswith("Z")

    back = pd.read_csv(path, parse_dates=["timestamp"], dtype={"transaction_id": str, "customer_id": str,
                                                               "terminal_id": str})
    assert tuple(back.columns) == CSV_COLUMNS
    assert back["timestamp"].dt.tz is not None
    pd.testing.assert_series_equal(back["timestamp"].dt.as_unit("ns"), small["timestamp"])
    for column in ("transaction_id", "customer_id", "terminal_id", "amount"):
        pd.testing.assert_series_equal(back[column], small[column], check_dtype=False)
    assert (back["label"].to_numpy() == small["label"].to_numpy()).all()
