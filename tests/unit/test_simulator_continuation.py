"""The simulator's population and its continuation (shared.simulator).

The first tests pin what ``simulate_transactions`` / ``simulate_for_volume`` produce for a
seed: published backtest figures are reproduced with them, so a refactoring must leave
them byte-identical.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from shared.simulator import (
    CARD_COMPROMISE_DAYS,
    COLUMNS,
    SCENARIO_CARD,
    SCENARIO_TERMINAL,
    TERMINAL_COMPROMISE_DAYS,
    FraudRates,
    Population,
    SimulationConfig,
    _events_on_day,
    _events_per_day,
    _simulate,
    continue_population,
    draw_profiles,
    history_for_volume,
    simulate_for_volume,
    simulate_transactions,
)


def digest(frame: pd.DataFrame) -> str:
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()


# Hashes taken from the simulator before the population was split from the days (commit 2998633).
PINNED = [
    (lambda: simulate_transactions(SimulationConfig(n_customers=300, n_terminals=600, n_days=20, seed=3)),
     12945, "eac30dbcdeffd4b6f24883a5ea96a87996ede233e0dacbe064416f560f7659b8"),
    (lambda: simulate_for_volume(8000, seed=2, n_days=10, start_date="2026-02-03"),
     8000, "de5fa01d3b86da7178457e3654c72087f25b0b26713a74152b764f62ac87ca85"),
    (lambda: simulate_transactions(SimulationConfig(
        n_customers=50, n_terminals=30, n_days=40, radius=2.0, compromised_terminals_per_day=1,
        compromised_customers_per_day=2, card_testing_attacks_per_day=3, seed=11)),
     5016, "740f3d9734e733d0fa915468f3fae8f7becf5aa732af394670bc66c41d051988"),
    # What `init` simulates by default (a second sizing round, then truncated).
    (lambda: simulate_for_volume(60_000, seed=0, n_days=60, start_date="2026-01-01"),
     60_000, "0b593e043a9b131426af4af14e2a23c740509e60436621649d87b06bfa1ff86b"),
]


@pytest.mark.parametrize(("make", "rows", "sha256"), PINNED)
def test_simulations_are_byte_identical_to_the_published_ones(make, rows, sha256):
    frame = make()
    assert len(frame) == rows
    assert digest(frame) == sha256


# --- the population and its continuation ----------------------------------------------------------------

DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def history() -> tuple[pd.DataFrame, Population]:
    # A truncated history, as init makes: the original days go on after it.
    return history_for_volume(20_000, seed=5, n_days=40, start_date="2026-03-01")


@pytest.fixture(scope="module")
def continuation(history) -> pd.DataFrame:
    frame, population = history
    return continue_population(population, frame["timestamp"].iloc[-1], frame["timestamp"].iloc[-1] + 90 * DAY)


def test_history_for_volume_is_simulate_for_volume_with_its_population(history):
    frame, population = history
    pd.testing.assert_frame_equal(frame, simulate_for_volume(20_000, seed=5, n_days=40, start_date="2026-03-01"))
    assert population.history_rows == 20_000 and population.config.seed == 5
    assert Population.from_dict(json.loads(json.dumps(population.to_dict()))) == population


def test_the_continuation_follows_the_history_without_overlap(history, continuation):
    frame, population = history
    assert tuple(continuation.columns) == COLUMNS
    assert continuation.dtypes.equals(frame.dtypes)
    assert continuation["timestamp"].is_monotonic_increasing and continuation["transaction_id"].is_unique
    assert not set(continuation["transaction_id"]) & set(frame["transaction_id"])
    # First the rest of the original days, with their original ids; then new days.
    assert continuation["transaction_id"].iloc[0] == "sim-5-000020000"
    assert continuation["timestamp"].iloc[0] >= frame["timestamp"].iloc[-1]
    assert continuation["transaction_id"].iloc[-1].startswith("sim-5-d")
    original = _simulate(population.config, population.rates).frame  # its rates are scaled to its size
    rest = original.iloc[20_000:]
    pd.testing.assert_frame_equal(continuation.iloc[:len(rest)], rest.reset_index(drop=True))


def test_the_continuation_is_the_same_population(history, continuation):
    frame, population = history
    profiles = draw_profiles(population.config)
    everyone = {f"C{i:06d}" for i in range(population.config.n_customers)}
    assert set(continuation["customer_id"]) <= everyone and set(frame["customer_id"]) <= everyone
    # Those seen in only one of them hardly ever pay.
    rare = set(continuation["customer_id"]) ^ set(frame["customer_id"])
    assert all(profiles.mean_tx_per_day[int(c[1:])] < 0.05 for c in rare)
    # Genuine payments happen only at the terminals near the customer's home, in both.
    for part in (frame, continuation):
        genuine = part[part["fraud_scenario"] == 0]
        customer = genuine["customer_id"].str[1:].astype(int).to_numpy()
        terminal = genuine["terminal_id"].str[1:].astype(int).to_numpy()
        near = [set(profiles.nearby[profiles.offsets[c]:profiles.offsets[c] + profiles.counts[c]]) for c in customer]
        assert all(t in allowed for t, allowed in zip(terminal, near))
    # Each customer spends as before: amounts and frequency.
    by_customer = pd.concat({"history": frame[frame["label"] == 0].groupby("customer_id")["amount"].mean(),
                             "continuation": continuation[continuation["label"] == 0]
                             .groupby("customer_id")["amount"].mean()}, axis=1).dropna()
    assert by_customer.corr().iloc[0, 1] > 0.9
    days_history = (frame["timestamp"].iloc[-1] - frame["timestamp"].iloc[0]) / DAY
    per_day = pd.concat({"history": frame.groupby("customer_id").size() / days_history,
                         "continuation": continuation.groupby("customer_id").size() / 90}, axis=1).fillna(0)
    assert per_day.corr().iloc[0, 1] > 0.9
    assert 0.9 < per_day["continuation"].sum() / per_day["history"].sum() < 1.1


def test_hours_of_the_day_are_the_histories(history, continuation):
    frame, _ = history
    for hour in (frame["timestamp"].dt.hour, continuation["timestamp"].dt.hour):
        assert 0.12 < (hour <= 6).mean() < 0.2  # night, as the features define it
        assert 10 <= hour.median() <= 13


def test_every_scenario_continues_at_the_population_rate(history, continuation):
    frame, population = history
    assert set(continuation["fraud_scenario"]) == {0, 1, 2, 3, 4}
    assert 0.6 < continuation["label"].mean() / frame["label"].mean() < 1.6
    # Compromise events on the original schedule: rate x days, fractional rates spread over days.
    rates = population.rates
    assert sum(_events_on_day(rates.compromised_terminals, d) for d in range(200)) == \
        _events_per_day(rates.compromised_terminals, 200).sum() == int(rates.compromised_terminals * 200 + 1e-9)
    attacks = continuation[continuation["fraud_scenario"] == 4]
    bursts = attacks.groupby([attacks["customer_id"], attacks["timestamp"].dt.floor("D")]).ngroups
    assert abs(bursts - rates.card_testing_attacks * 90) <= 2


def test_compromises_from_the_history_go_on_in_the_continuation(history):
    frame, population = history
    config = population.config
    original = _simulate(config, population.rates)
    first_new_day = pd.Timestamp(config.start_date, tz="UTC") + config.n_days * DAY
    new_days = continue_population(population, first_new_day, first_new_day + 3 * DAY)
    for victims, duration, scenario, column, prefix in (
            (original.terminal_victims, TERMINAL_COMPROMISE_DAYS, SCENARIO_TERMINAL, "terminal_id", "T"),
            (original.card_victims, CARD_COMPROMISE_DAYS, SCENARIO_CARD, "customer_id", "C")):
        still = {f"{prefix}{m:06d}" for day, members in victims if day + duration > config.n_days + 2 for m in members}
        assert still
        hit = new_days[new_days[column].isin(still)]
        assert (hit["fraud_scenario"] == scenario).any()
        if scenario == SCENARIO_TERMINAL:  # every payment at a compromised terminal is fraud
            assert (hit["label"] == 1).all()


def test_a_day_is_the_same_whichever_window_asks_for_it(history, continuation):
    frame, population = history
    start = frame["timestamp"].iloc[-1]
    middle, end = start + pd.Timedelta(hours=70, minutes=13, seconds=5), start + 5 * DAY
    whole = continue_population(population, start, end)
    parts = pd.concat([continue_population(population, start, middle),
                       continue_population(population, middle, end)], ignore_index=True)
    pd.testing.assert_frame_equal(parts, whole)
    pd.testing.assert_frame_equal(whole, continuation[continuation["timestamp"] < end].reset_index(drop=True))
    later = continue_population(population, start + 50 * DAY, start + 52 * DAY)
    expected = continuation[(continuation["timestamp"] >= start + 50 * DAY)
                            & (continuation["timestamp"] < start + 52 * DAY)].reset_index(drop=True)
    pd.testing.assert_frame_equal(later, expected)
    assert len(continue_population(population, end, end)) == 0


def test_the_continuation_of_a_whole_simulation_starts_after_its_days():
    config = SimulationConfig(n_customers=100, n_terminals=200, n_days=10, seed=3, start_date="2026-05-01")
    population = Population(config, FraudRates(2, 3, 1))  # history_rows None: all of the 10 days are history
    frame = continue_population(population, "2026-04-01", "2026-05-13")
    assert frame["timestamp"].min() >= pd.Timestamp("2026-05-11", tz="UTC")
    assert frame["transaction_id"].str.fullmatch(r"sim-3-d00(10|11)-\d{6}").all()
    assert np.isin(frame["fraud_scenario"].unique(), [0, 1, 2, 3, 4]).all()
