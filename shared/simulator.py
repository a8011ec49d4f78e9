"""Labeled payment-card transactions from a simulated population.

Modelled on the simulator described in the ULB handbook "Reproducible Machine
Learning for Credit Card Fraud Detection" (Le Borgne et al.), re-implemented
and vectorised with numpy. Customers and terminals live on a 100x100 grid;
each customer spends at the terminals near home, around noon, with amounts
drawn from their own distribution. Frauds come from four scenarios:

1. any transaction above ``LARGE_AMOUNT`` (a rule a model must learn);
2. compromised terminals: all their transactions for ``TERMINAL_COMPROMISE_DAYS``;
3. compromised cards: a third of their transactions for ``CARD_COMPROMISE_DAYS``,
   with the amount multiplied by ``CARD_FRAUD_AMOUNT_FACTOR``;
4. card testing: a stolen card makes a burst of tiny payments within minutes at
   a terminal far from home, then one large cash-out payment.

Everything is drawn from one ``np.random.default_rng(seed)``, in a fixed
order, so a configuration always yields the same frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from os import PathLike

import numpy as np
import pandas as pd

GRID_SIZE = 100.0
SECONDS_PER_DAY = 86_400
NOON = SECONDS_PER_DAY / 2
TIME_OF_DAY_STD = 20_000.0

LARGE_AMOUNT = 220.0
TERMINAL_COMPROMISE_DAYS = 28
CARD_COMPROMISE_DAYS = 14
CARD_FRAUD_SHARE = 1 / 3
CARD_FRAUD_AMOUNT_FACTOR = 5.0

CARD_TEST_PAYMENTS = (3, 8)  # inclusive range of tiny payments per burst
CARD_TEST_MAX_AMOUNT = 4.99
CARD_TEST_GAP_SECONDS = (5, 90)
CASH_OUT_DELAY_SECONDS = (60, 900)
CASH_OUT_AMOUNT = (150.0, 1500.0)
# "Far from home": several times the radius a customer normally shops in.
FAR_FROM_HOME_RADII = 4.0

GENUINE, SCENARIO_LARGE_AMOUNT, SCENARIO_TERMINAL, SCENARIO_CARD, SCENARIO_CARD_TESTING = range(5)

COLUMNS = ("transaction_id", "timestamp", "customer_id", "terminal_id", "amount", "label", "fraud_scenario")
CSV_COLUMNS = COLUMNS[:6]

_TERMINALS_PER_CUSTOMER = 2
_MEAN_TX_PER_CUSTOMER_DAY = 2.0  # mean of uniform(0, 4)


@dataclass(frozen=True)
class SimulationConfig:
    """Size, horizon and fraud intensity of a simulation; ``seed`` fixes the outcome."""

    n_customers: int = 5000
    n_terminals: int = 10000
    n_days: int = 183
    start_date: str = "2026-04-01"  # UTC day
    radius: float = 5.0
    compromised_terminals_per_day: int = 2
    compromised_customers_per_day: int = 3
    seed: int = 0
    # Scenario 4; last so the positional order of the fields above stays as documented.
    card_testing_attacks_per_day: int = 1


# simulate_for_volume keeps this configuration's fraud events per customer.
_REFERENCE = SimulationConfig()


@dataclass(frozen=True)
class _DailyRates:
    """Fraud events per day; fractional rates are spread evenly over the days."""

    compromised_terminals: float
    compromised_customers: float
    card_testing_attacks: float


def simulate_transactions(config: SimulationConfig) -> pd.DataFrame:
    """Simulate ``config`` and return its transactions sorted by timestamp.

    Columns: transaction_id (str, ``sim-<seed>-<n>``), timestamp (datetime64[ns, UTC]),
    customer_id (``C000123``), terminal_id (``T000456``), amount (float64, 2 decimals, > 0),
    label (int8 0/1) and fraud_scenario (int8, 0 genuine or 1..4).
    """
    rates = _DailyRates(
        compromised_terminals=config.compromised_terminals_per_day,
        compromised_customers=config.compromised_customers_per_day,
        card_testing_attacks=config.card_testing_attacks_per_day,
    )
    return _simulate(config, rates)


def simulate_for_volume(
    n_transactions: int, seed: int = 0, n_days: int = 183, start_date: str = "2026-04-01"
) -> pd.DataFrame:
    """Return the first ``n_transactions`` of a population sized to produce about that many in ``n_days``.

    Terminals (two per customer) and fraud events per day scale with the number
    of customers, so the fraud rate stays near the default configuration's.
    For a small batch, pass a short ``n_days``: a handful of customers over
    half a year is a poor sample of behaviour.
    """
    if n_transactions < 0 or n_days < 1:
        raise ValueError("n_transactions must be >= 0 and n_days >= 1")
    # Aim a little high: per-customer frequencies are random and a short frame means another run.
    wanted = n_transactions * 1.05
    while True:
        n_customers = max(1, math.ceil(wanted / (_MEAN_TX_PER_CUSTOMER_DAY * n_days)))
        config = SimulationConfig(
            n_customers=n_customers,
            n_terminals=_TERMINALS_PER_CUSTOMER * n_customers,
            n_days=n_days,
            start_date=start_date,
            seed=seed,
        )
        scale = n_customers / _REFERENCE.n_customers
        rates = _DailyRates(
            compromised_terminals=_REFERENCE.compromised_terminals_per_day * scale,
            compromised_customers=_REFERENCE.compromised_customers_per_day * scale,
            card_testing_attacks=_REFERENCE.card_testing_attacks_per_day * scale,
        )
        frame = _simulate(config, rates)
        if len(frame) >= n_transactions:
            return frame.iloc[:n_transactions].reset_index(drop=True)
        wanted *= 1.2 * n_transactions / max(len(frame), 1)


def write_csv(df: pd.DataFrame, path: str | PathLike[str]) -> None:
    """Write transaction_id,timestamp,customer_id,terminal_id,amount,label; timestamps ISO-8601 with ``Z``."""
    out = df.loc[:, list(CSV_COLUMNS)].copy()
    instants = pd.to_datetime(out["timestamp"], utc=True).dt.tz_convert(None).to_numpy()
    whole_seconds = bool((instants.astype("datetime64[s]") == instants).all())
    # numpy formats in C, far faster than strftime; keep sub-second digits only when present.
    out["timestamp"] = np.datetime_as_string(instants, unit="s" if whole_seconds else "us", timezone="UTC")
    out.to_csv(path, index=False)


def _simulate(config: SimulationConfig, rates: _DailyRates) -> pd.DataFrame:
    _validate(config)
    rng = np.random.default_rng(config.seed)
    n_days = config.n_days

    customer_xy = rng.uniform(0, GRID_SIZE, size=(config.n_customers, 2))
    mean_amount = rng.uniform(5, 100, size=config.n_customers)
    std_amount = mean_amount / 2
    mean_tx_per_day = rng.uniform(0, 4, size=config.n_customers)
    terminal_xy = rng.uniform(0, GRID_SIZE, size=(config.n_terminals, 2))
    offsets, counts, nearby = _terminals_near(customer_xy, terminal_xy, config.radius)

    # Genuine spending: Poisson count per customer-day, then one row per transaction.
    tx_per_customer_day = rng.poisson(np.broadcast_to(mean_tx_per_day, (n_days, config.n_customers)))
    n_tx = int(tx_per_customer_day.sum())
    flat_counts = tx_per_customer_day.ravel()
    day = np.repeat(np.arange(n_days).repeat(config.n_customers), flat_counts)
    customer = np.repeat(np.tile(np.arange(config.n_customers), n_days), flat_counts)
    seconds = _truncated_normal(rng, NOON, TIME_OF_DAY_STD, n_tx, 0, SECONDS_PER_DAY - 1).astype(np.int64)
    amount = _positive_amounts(rng, mean_amount[customer], std_amount[customer])
    pick = (rng.random(n_tx) * counts[customer]).astype(np.int64)
    terminal = nearby[offsets[customer] + pick]

    scenario = np.where(amount > LARGE_AMOUNT, SCENARIO_LARGE_AMOUNT, GENUINE).astype(np.int8)

    compromised_terminal = _compromise_windows(
        rng, n_days, config.n_terminals, rates.compromised_terminals, TERMINAL_COMPROMISE_DAYS
    )
    scenario[compromised_terminal[day, terminal]] = SCENARIO_TERMINAL

    compromised_card = _compromise_windows(
        rng, n_days, config.n_customers, rates.compromised_customers, CARD_COMPROMISE_DAYS
    )
    stolen = compromised_card[day, customer] & (rng.random(n_tx) < CARD_FRAUD_SHARE)
    amount[stolen] = np.round(amount[stolen] * CARD_FRAUD_AMOUNT_FACTOR, 2)
    scenario[stolen] = SCENARIO_CARD

    tests = _card_testing(rng, config, rates.card_testing_attacks, customer_xy, terminal_xy)
    day = np.concatenate([day, tests["day"]])
    seconds = np.concatenate([seconds, tests["seconds"]])
    customer = np.concatenate([customer, tests["customer"]])
    terminal = np.concatenate([terminal, tests["terminal"]])
    amount = np.concatenate([amount, tests["amount"]])
    scenario = np.concatenate([scenario, np.full(len(tests["day"]), SCENARIO_CARD_TESTING, np.int8)])

    return _to_frame(config, day, seconds, customer, terminal, amount, scenario)


def _validate(config: SimulationConfig) -> None:
    if config.n_customers < 1 or config.n_terminals < 1 or config.n_days < 1:
        raise ValueError("n_customers, n_terminals and n_days must be >= 1")
    if config.radius < 0:
        raise ValueError("radius must be >= 0")
    if min(config.compromised_terminals_per_day, config.compromised_customers_per_day,
           config.card_testing_attacks_per_day) < 0:
        raise ValueError("fraud events per day must be >= 0")


def _terminals_near(
    customer_xy: np.ndarray, terminal_xy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each customer's terminals within ``radius`` (the nearest one if none), as offsets/counts into a flat array."""
    # Chunked so the distance matrix stays a few tens of MB whatever the population.
    chunk = max(1, 4_000_000 // len(terminal_xy))
    per_chunk: list[np.ndarray] = []
    counts = np.empty(len(customer_xy), dtype=np.int64)
    for start in range(0, len(customer_xy), chunk):
        block = customer_xy[start:start + chunk]
        squared = np.square(block[:, :1] - terminal_xy[:, 0]) + np.square(block[:, 1:] - terminal_xy[:, 1])
        within = squared <= radius * radius
        lonely = ~within.any(axis=1)
        within[lonely, squared[lonely].argmin(axis=1)] = True
        rows, cols = np.nonzero(within)  # row-major, so grouped by customer
        per_chunk.append(cols)
        counts[start:start + len(block)] = np.bincount(rows, minlength=len(block))
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return offsets, counts, np.concatenate(per_chunk)


def _truncated_normal(
    rng: np.random.Generator, mean: float, std: float, size: int, low: float, high: float
) -> np.ndarray:
    """Normal draws confined to [low, high] by redrawing the outliers (clipping would pile them on the edges)."""
    values = rng.normal(mean, std, size)
    outside = np.flatnonzero((values < low) | (values > high))
    while outside.size:
        values[outside] = rng.normal(mean, std, outside.size)
        outside = outside[(values[outside] < low) | (values[outside] > high)]
    return values


def _positive_amounts(rng: np.random.Generator, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Normal(mean, std) amounts rounded to cents, redrawn until at least one cent."""
    amounts = np.round(rng.normal(mean, std), 2)
    bad = np.flatnonzero(amounts < 0.01)
    while bad.size:
        amounts[bad] = np.round(rng.normal(mean[bad], std[bad]), 2)
        bad = bad[amounts[bad] < 0.01]
    return amounts


def _events_per_day(rate: float, n_days: int) -> np.ndarray:
    """Integer event counts per day whose running total tracks ``rate * days`` (exactly ``rate`` if integral)."""
    cumulative = np.floor(rate * np.arange(n_days + 1) + 1e-9).astype(np.int64)
    return np.diff(cumulative)


def _compromise_windows(
    rng: np.random.Generator, n_days: int, population: int, rate: float, duration: int
) -> np.ndarray:
    """Boolean (day, member) matrix: True while a member compromised on some day stays compromised."""
    compromised = np.zeros((n_days, population), dtype=bool)
    for first_day, count in enumerate(_events_per_day(rate, n_days)):
        if count:
            victims = rng.choice(population, size=min(int(count), population), replace=False)
            compromised[first_day:first_day + duration, victims] = True
    return compromised


def _card_testing(
    rng: np.random.Generator, config: SimulationConfig, rate: float,
    customer_xy: np.ndarray, terminal_xy: np.ndarray,
) -> dict[str, np.ndarray]:
    """Bursts of tiny payments at a far-away terminal followed by one large payment (scenario 4)."""
    attack_day = np.repeat(np.arange(config.n_days), _events_per_day(rate, config.n_days))
    n_attacks = len(attack_day)
    victim = rng.integers(0, config.n_customers, n_attacks)
    place = _far_terminals(rng, customer_xy[victim], terminal_xy, FAR_FROM_HOME_RADII * config.radius)
    n_tests = rng.integers(CARD_TEST_PAYMENTS[0], CARD_TEST_PAYMENTS[1] + 1, n_attacks)
    burst_size = n_tests + 1  # the tests, then the cash-out
    attack = np.repeat(np.arange(n_attacks), burst_size)
    first_row = (np.cumsum(burst_size) - burst_size)[attack]
    position = np.arange(len(attack)) - first_row
    is_cash_out = position == n_tests[attack]

    gap = np.where(
        is_cash_out,
        rng.integers(CASH_OUT_DELAY_SECONDS[0], CASH_OUT_DELAY_SECONDS[1] + 1, len(attack)),
        rng.integers(CARD_TEST_GAP_SECONDS[0], CARD_TEST_GAP_SECONDS[1] + 1, len(attack)),
    )
    gap[position == 0] = 0
    elapsed = np.cumsum(gap)
    elapsed -= elapsed[first_row]
    longest_burst = CARD_TEST_PAYMENTS[1] * CARD_TEST_GAP_SECONDS[1] + CASH_OUT_DELAY_SECONDS[1]
    # Any time of day or night, but the whole burst stays within its day.
    burst_start = rng.integers(0, SECONDS_PER_DAY - longest_burst, n_attacks)
    seconds = burst_start[attack] + elapsed

    small = np.round(rng.uniform(0.5, CARD_TEST_MAX_AMOUNT, len(attack)), 2)
    low, high = np.log(CASH_OUT_AMOUNT)
    large = np.round(np.exp(rng.uniform(low, high, len(attack))), 2)
    return {
        "day": attack_day[attack],
        "seconds": seconds.astype(np.int64),
        "customer": victim[attack],
        "terminal": place[attack],
        "amount": np.where(is_cash_out, large, small),
    }


def _far_terminals(
    rng: np.random.Generator, homes: np.ndarray, terminal_xy: np.ndarray, min_distance: float
) -> np.ndarray:
    """A random terminal at least ``min_distance`` from each home (any terminal after a few misses)."""
    chosen = rng.integers(0, len(terminal_xy), len(homes))
    for _ in range(20):
        near = np.flatnonzero(((terminal_xy[chosen] - homes) ** 2).sum(axis=1) < min_distance ** 2)
        if not near.size:
            break
        chosen[near] = rng.integers(0, len(terminal_xy), near.size)
    return chosen


def _to_frame(
    config: SimulationConfig, day: np.ndarray, seconds: np.ndarray, customer: np.ndarray,
    terminal: np.ndarray, amount: np.ndarray, scenario: np.ndarray,
) -> pd.DataFrame:
    """Sort the transactions by time and give them their public ids and dtypes."""
    offset_seconds = day.astype(np.int64) * SECONDS_PER_DAY + seconds
    # Stable sort: ties keep generation order, so the frame is reproducible.
    order = np.argsort(offset_seconds, kind="stable")
    start = _start_of_day(config.start_date)
    instants = np.datetime64(start.value, "ns") + (offset_seconds[order] * 1_000_000_000).astype("timedelta64[ns]")

    n = len(order)
    width = max(9, len(str(max(n - 1, 0))))
    return pd.DataFrame({
        "transaction_id": pd.array([f"sim-{config.seed}-{i:0{width}d}" for i in range(n)], dtype="str"),
        "timestamp": pd.DatetimeIndex(instants).tz_localize("UTC"),
        "customer_id": pd.array(_ids("C", config.n_customers)[customer[order]], dtype="str"),
        "terminal_id": pd.array(_ids("T", config.n_terminals)[terminal[order]], dtype="str"),
        "amount": amount[order].astype(np.float64),
        "label": (scenario[order] != GENUINE).astype(np.int8),
        "fraud_scenario": scenario[order].astype(np.int8),
    })


def _ids(prefix: str, count: int) -> np.ndarray:
    width = max(6, len(str(count - 1)))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(count)], dtype=object)


def _start_of_day(start_date: str) -> pd.Timestamp:
    start = pd.Timestamp(start_date)
    start = start.tz_localize("UTC") if start.tz is None else start.tz_convert("UTC")
    return start.normalize().as_unit("ns")
