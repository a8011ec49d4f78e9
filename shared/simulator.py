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
order, so a configuration always yields the same frame: first the population (customer
and terminal profiles, :func:`draw_profiles`), then the days. :func:`continue_population`
re-draws the same population from the seed and simulates what it does after a stored
history, each new day from its own stream, so ``simulate`` can run a demo's clock on
without changing a single transaction of the history (or of any published dataset).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from os import PathLike
from typing import Any

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
class FraudRates:
    """Fraud events per day; fractional rates are spread evenly over the days."""

    compromised_terminals: float
    compromised_customers: float
    card_testing_attacks: float


@dataclass(frozen=True)
class Population:
    """What a simulation was made of, enough to re-draw it and continue it.

    ``config`` (with its seed) fixes the customer and terminal profiles (the first draws of
    ``default_rng(seed)``) and the first ``config.n_days`` days; ``rates`` are its fraud
    events per day; ``history_rows``: the history kept is the first ``history_rows``
    transactions of those days (None: all of them). :func:`continue_population` simulates
    what the same customers and terminals do after that history.
    """

    config: SimulationConfig
    rates: FraudRates
    history_rows: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "rates": asdict(self.rates), "history_rows": self.history_rows}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Population:
        fields = {f.name for f in dataclass_fields(SimulationConfig)}
        unknown = set(data["config"]) - fields
        if unknown:
            raise ValueError(f"unknown simulation settings {sorted(unknown)}")
        rows = data.get("history_rows")
        return cls(SimulationConfig(**data["config"]), FraudRates(**data["rates"]),
                   None if rows is None else int(rows))


def simulate_transactions(config: SimulationConfig) -> pd.DataFrame:
    """Simulate ``config`` and return its transactions sorted by timestamp.

    Columns: transaction_id (str, ``sim-<seed>-<n>``), timestamp (datetime64[ns, UTC]),
    customer_id (``C000123``), terminal_id (``T000456``), amount (float64, 2 decimals, > 0),
    label (int8 0/1) and fraud_scenario (int8, 0 genuine or 1..4).
    """
    return _simulate(config, _config_rates(config)).frame


def _config_rates(config: SimulationConfig) -> FraudRates:
    return FraudRates(
        compromised_terminals=config.compromised_terminals_per_day,
        compromised_customers=config.compromised_customers_per_day,
        card_testing_attacks=config.card_testing_attacks_per_day,
    )


def simulate_for_volume(
    n_transactions: int, seed: int = 0, n_days: int = 183, start_date: str = "2026-04-01"
) -> pd.DataFrame:
    """Return the first ``n_transactions`` of a population sized to produce about that many in ``n_days``.

    Terminals (two per customer) and fraud events per day scale with the number
    of customers, so the fraud rate stays near the default configuration's.
    For a small batch, pass a short ``n_days``: a handful of customers over
    half a year is a poor sample of behaviour.
    """
    return history_for_volume(n_transactions, seed, n_days, start_date)[0]


def history_for_volume(
    n_transactions: int, seed: int = 0, n_days: int = 183, start_date: str = "2026-04-01"
) -> tuple[pd.DataFrame, Population]:
    """:func:`simulate_for_volume`'s frame, and the population it came from (to continue it)."""
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
        rates = FraudRates(
            compromised_terminals=_REFERENCE.compromised_terminals_per_day * scale,
            compromised_customers=_REFERENCE.compromised_customers_per_day * scale,
            card_testing_attacks=_REFERENCE.card_testing_attacks_per_day * scale,
        )
        frame = _simulate(config, rates).frame
        if len(frame) >= n_transactions:
            return frame.iloc[:n_transactions].reset_index(drop=True), Population(config, rates, n_transactions)
        wanted *= 1.2 * n_transactions / max(len(frame), 1)


def write_csv(df: pd.DataFrame, path: str | PathLike[str], on_rows: Callable[[int], None] | None = None,
              chunk_rows: int = 100_000) -> None:
    """Write transaction_id,timestamp,customer_id,terminal_id,amount,label; timestamps ISO-8601 with ``Z``.

    Written ``chunk_rows`` at a time (the bytes do not depend on it); ``on_rows(n)`` after each chunk.
    """
    out = df.loc[:, list(CSV_COLUMNS)].copy()
    instants = pd.to_datetime(out["timestamp"], utc=True).dt.tz_convert(None).to_numpy()
    whole_seconds = bool((instants.astype("datetime64[s]") == instants).all())
    # numpy formats in C, far faster than strftime; keep sub-second digits only when present.
    out["timestamp"] = np.datetime_as_string(instants, unit="s" if whole_seconds else "us", timezone="UTC")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        for start in range(0, max(len(out), 1), chunk_rows):
            part = out.iloc[start:start + chunk_rows]
            part.to_csv(handle, index=False, header=start == 0)
            if on_rows is not None and len(part):
                on_rows(len(part))


@dataclass(frozen=True)
class Profiles:
    """The population: where customers and terminals are, how each customer spends."""

    customer_xy: np.ndarray
    mean_amount: np.ndarray
    std_amount: np.ndarray
    mean_tx_per_day: np.ndarray
    terminal_xy: np.ndarray
    # Each customer's terminals within the radius: nearby[offsets[c]:offsets[c] + counts[c]].
    offsets: np.ndarray
    counts: np.ndarray
    nearby: np.ndarray


@dataclass(frozen=True)
class _Simulated:
    frame: pd.DataFrame
    # (day, members) of every compromise event, in the order drawn.
    terminal_victims: list[tuple[int, np.ndarray]]
    card_victims: list[tuple[int, np.ndarray]]


def draw_profiles(config: SimulationConfig, rng: np.random.Generator | None = None) -> Profiles:
    """The customer and terminal profiles of ``config``: the first draws of ``default_rng(seed)``."""
    rng = np.random.default_rng(config.seed) if rng is None else rng
    customer_xy = rng.uniform(0, GRID_SIZE, size=(config.n_customers, 2))
    mean_amount = rng.uniform(5, 100, size=config.n_customers)
    std_amount = mean_amount / 2
    mean_tx_per_day = rng.uniform(0, 4, size=config.n_customers)
    terminal_xy = rng.uniform(0, GRID_SIZE, size=(config.n_terminals, 2))
    offsets, counts, nearby = _terminals_near(customer_xy, terminal_xy, config.radius)
    return Profiles(customer_xy, mean_amount, std_amount, mean_tx_per_day, terminal_xy, offsets, counts, nearby)


def _simulate(config: SimulationConfig, rates: FraudRates) -> _Simulated:
    _validate(config)
    rng = np.random.default_rng(config.seed)
    profiles = draw_profiles(config, rng)
    return _simulate_days(rng, config, rates, profiles)


def _simulate_days(rng: np.random.Generator, config: SimulationConfig, rates: FraudRates,
                   profiles: Profiles) -> _Simulated:
    """Days 0 .. n_days - 1 of the population, drawn from ``rng`` after the profiles."""
    n_days = config.n_days
    day, seconds, customer, terminal, amount = _genuine(
        rng, profiles, np.broadcast_to(profiles.mean_tx_per_day, (n_days, config.n_customers)))
    n_tx = len(day)

    scenario = np.where(amount > LARGE_AMOUNT, SCENARIO_LARGE_AMOUNT, GENUINE).astype(np.int8)

    terminal_victims = _compromise_victims(rng, n_days, config.n_terminals, rates.compromised_terminals)
    compromised_terminal = _windows(terminal_victims, n_days, config.n_terminals, TERMINAL_COMPROMISE_DAYS)
    scenario[compromised_terminal[day, terminal]] = SCENARIO_TERMINAL

    card_victims = _compromise_victims(rng, n_days, config.n_customers, rates.compromised_customers)
    compromised_card = _windows(card_victims, n_days, config.n_customers, CARD_COMPROMISE_DAYS)
    stolen = compromised_card[day, customer] & (rng.random(n_tx) < CARD_FRAUD_SHARE)
    amount[stolen] = np.round(amount[stolen] * CARD_FRAUD_AMOUNT_FACTOR, 2)
    scenario[stolen] = SCENARIO_CARD

    attack_day = np.repeat(np.arange(n_days), _events_per_day(rates.card_testing_attacks, n_days))
    tests = _card_testing(rng, attack_day, config, profiles)
    day = np.concatenate([day, tests["day"]])
    seconds = np.concatenate([seconds, tests["seconds"]])
    customer = np.concatenate([customer, tests["customer"]])
    terminal = np.concatenate([terminal, tests["terminal"]])
    amount = np.concatenate([amount, tests["amount"]])
    scenario = np.concatenate([scenario, np.full(len(tests["day"]), SCENARIO_CARD_TESTING, np.int8)])

    frame = _to_frame(config, day, seconds, customer, terminal, amount, scenario)
    return _Simulated(frame, terminal_victims, card_victims)


def _genuine(
    rng: np.random.Generator, profiles: Profiles, mean_per_day: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Genuine spending: a Poisson count per (day, customer) of ``mean_per_day``, then one row
    per transaction: (day index into ``mean_per_day``, seconds, customer, terminal, amount)."""
    n_days, n_customers = mean_per_day.shape
    tx_per_customer_day = rng.poisson(mean_per_day)
    n_tx = int(tx_per_customer_day.sum())
    flat_counts = tx_per_customer_day.ravel()
    day = np.repeat(np.arange(n_days).repeat(n_customers), flat_counts)
    customer = np.repeat(np.tile(np.arange(n_customers), n_days), flat_counts)
    seconds = _truncated_normal(rng, NOON, TIME_OF_DAY_STD, n_tx, 0, SECONDS_PER_DAY - 1).astype(np.int64)
    amount = _positive_amounts(rng, profiles.mean_amount[customer], profiles.std_amount[customer])
    pick = (rng.random(n_tx) * profiles.counts[customer]).astype(np.int64)
    terminal = profiles.nearby[profiles.offsets[customer] + pick]
    return day, seconds, customer, terminal, amount


# --- continuing a population after its history ----------------------------------------

# Streams of a continuation day: SeedSequence([seed, _CONTINUATION, day, part]).
_CONTINUATION = 1
_DAY_STREAM, _TERMINAL_STREAM, _CARD_STREAM = range(3)


def continue_population(population: Population, start: Any, end: Any) -> pd.DataFrame:
    """The population's transactions after its history, with ``start <= timestamp < end``.

    The same customers and terminals (re-drawn from the seed) go on spending as they did:
    first the rest of the original days (the original transactions after the first
    ``history_rows``, with their original ids), then new days. Each new day ``d`` (counted
    from ``config.start_date``) is drawn from its own streams, ``SeedSequence([seed, 1, d, ...])``,
    so a day is the same whichever window asks for it; its ids are ``sim-<seed>-d<d>-<n>``.
    Fraud continues at the population's rates, on the same schedule: terminals and cards
    compromised near the end of the history stay compromised for their whole window, and
    new compromises and card-testing attacks happen at ``population.rates`` per day.
    Columns and dtypes are those of :func:`simulate_transactions`.
    """
    config = population.config
    _validate(config)
    start, end = _utc(start), _utc(end)
    origin = _start_of_day(config.start_date)
    parts: list[pd.DataFrame] = []
    if end <= start:
        return empty_transactions()
    first_day = max(int((start - origin) // pd.Timedelta(days=1)), 0)
    last_day = int((end - origin - pd.Timedelta(1, "ns")) // pd.Timedelta(days=1))
    longest = max(TERMINAL_COMPROMISE_DAYS, CARD_COMPROMISE_DAYS)
    original: _Simulated | None = None
    if first_day < config.n_days + longest:  # the original days, or their compromises, are needed
        original = _simulate(config, population.rates)
        if first_day < config.n_days:
            rest = original.frame.iloc[population.history_rows or len(original.frame):]
            parts.append(rest[(rest["timestamp"] >= start) & (rest["timestamp"] < end)])
    profiles = draw_profiles(config)
    victims = _VictimSchedule(population, original)
    for day in range(max(first_day, config.n_days), last_day + 1):
        frame = _continuation_day(population, profiles, victims, day)
        parts.append(frame[(frame["timestamp"] >= start) & (frame["timestamp"] < end)])
    parts = [part for part in parts if len(part)]
    if not parts:
        return empty_transactions()
    return pd.concat(parts, ignore_index=True)


class _VictimSchedule:
    """Which terminals and cards are compromised on a given day: those hit within the
    compromise duration before it, in the original days or in continuation days."""

    def __init__(self, population: Population, original: _Simulated | None):
        self.population = population
        self.original = original
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def compromised(self, stream: int, day: int) -> np.ndarray:
        duration = TERMINAL_COMPROMISE_DAYS if stream == _TERMINAL_STREAM else CARD_COMPROMISE_DAYS
        hit = [self._victims(stream, first) for first in range(max(day - duration + 1, 0), day + 1)]
        return np.unique(np.concatenate(hit)) if hit else np.empty(0, np.int64)

    def _victims(self, stream: int, day: int) -> np.ndarray:
        key = (stream, day)
        if key not in self._cache:
            self._cache[key] = self._draw(stream, day)
        return self._cache[key]

    def _draw(self, stream: int, day: int) -> np.ndarray:
        config, rates = self.population.config, self.population.rates
        if day < config.n_days:
            assert self.original is not None
            events = self.original.terminal_victims if stream == _TERMINAL_STREAM else self.original.card_victims
            return np.concatenate([v for d, v in events if d == day] or [np.empty(0, np.int64)]).astype(np.int64)
        if stream == _TERMINAL_STREAM:
            size, rate = config.n_terminals, rates.compromised_terminals
        else:
            size, rate = config.n_customers, rates.compromised_customers
        count = min(_events_on_day(rate, day), size)
        if not count:
            return np.empty(0, np.int64)
        rng = np.random.default_rng([config.seed, _CONTINUATION, day, stream])
        return rng.choice(size, size=count, replace=False).astype(np.int64)


def _continuation_day(population: Population, profiles: Profiles, victims: _VictimSchedule, day: int) -> pd.DataFrame:
    """Day ``day`` (>= the original n_days) of the population, the way the original days are made."""
    config, rates = population.config, population.rates
    rng = np.random.default_rng([config.seed, _CONTINUATION, day, _DAY_STREAM])
    _, seconds, customer, terminal, amount = _genuine(rng, profiles, profiles.mean_tx_per_day[np.newaxis, :])
    n_tx = len(seconds)
    scenario = np.where(amount > LARGE_AMOUNT, SCENARIO_LARGE_AMOUNT, GENUINE).astype(np.int8)

    scenario[np.isin(terminal, victims.compromised(_TERMINAL_STREAM, day))] = SCENARIO_TERMINAL
    stolen = np.isin(customer, victims.compromised(_CARD_STREAM, day)) & (rng.random(n_tx) < CARD_FRAUD_SHARE)
    amount[stolen] = np.round(amount[stolen] * CARD_FRAUD_AMOUNT_FACTOR, 2)
    scenario[stolen] = SCENARIO_CARD

    attack_day = np.zeros(_events_on_day(rates.card_testing_attacks, day), np.int64)
    tests = _card_testing(rng, attack_day, config, profiles)
    seconds = np.concatenate([seconds, tests["seconds"]])
    customer = np.concatenate([customer, tests["customer"]])
    terminal = np.concatenate([terminal, tests["terminal"]])
    amount = np.concatenate([amount, tests["amount"]])
    scenario = np.concatenate([scenario, np.full(len(tests["day"]), SCENARIO_CARD_TESTING, np.int8)])
    days = np.full(len(seconds), day, np.int64)
    return _to_frame(config, days, seconds, customer, terminal, amount, scenario,
                     id_prefix=f"sim-{config.seed}-d{day:04d}-", id_width=6)


def _events_on_day(rate: float, day: int) -> int:
    """Events on absolute day ``day`` of the schedule :func:`_events_per_day` spreads."""
    return int(math.floor(rate * (day + 1) + 1e-9) - math.floor(rate * day + 1e-9))


def _utc(value: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return (stamp.tz_localize("UTC") if stamp.tz is None else stamp.tz_convert("UTC")).as_unit("ns")


def empty_transactions() -> pd.DataFrame:
    """A frame with the columns and dtypes of :func:`simulate_transactions` and no rows."""
    return pd.DataFrame({
        "transaction_id": pd.array([], dtype="str"),
        "timestamp": pd.DatetimeIndex([], dtype="datetime64[ns, UTC]"),
        "customer_id": pd.array([], dtype="str"),
        "terminal_id": pd.array([], dtype="str"),
        "amount": np.empty(0, np.float64),
        "label": np.empty(0, np.int8),
        "fraud_scenario": np.empty(0, np.int8),
    })


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


def _compromise_victims(
    rng: np.random.Generator, n_days: int, population: int, rate: float
) -> list[tuple[int, np.ndarray]]:
    """(first day, members) of each day's compromise events, drawn day by day."""
    victims = []
    for first_day, count in enumerate(_events_per_day(rate, n_days)):
        if count:
            victims.append((first_day, rng.choice(population, size=min(int(count), population), replace=False)))
    return victims


def _windows(victims: list[tuple[int, np.ndarray]], n_days: int, population: int, duration: int) -> np.ndarray:
    """Boolean (day, member) matrix: True while a member compromised on some day stays compromised."""
    compromised = np.zeros((n_days, population), dtype=bool)
    for first_day, members in victims:
        compromised[first_day:first_day + duration, members] = True
    return compromised


def _card_testing(
    rng: np.random.Generator, attack_day: np.ndarray, config: SimulationConfig, profiles: Profiles,
) -> dict[str, np.ndarray]:
    """Bursts of tiny payments at a far-away terminal followed by one large payment (scenario 4),
    one attack on each day listed in ``attack_day``."""
    n_attacks = len(attack_day)
    victim = rng.integers(0, config.n_customers, n_attacks)
    place = _far_terminals(rng, profiles.customer_xy[victim], profiles.terminal_xy,
                           FAR_FROM_HOME_RADII * config.radius)
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
    id_prefix: str | None = None, id_width: int = 9,
) -> pd.DataFrame:
    """Sort the transactions by time and give them their public ids (``<id_prefix><n>``,
    default ``sim-<seed>-``, n from 0 in time order) and dtypes."""
    offset_seconds = day.astype(np.int64) * SECONDS_PER_DAY + seconds
    # Stable sort: ties keep generation order, so the frame is reproducible.
    order = np.argsort(offset_seconds, kind="stable")
    start = _start_of_day(config.start_date)
    instants = np.datetime64(start.value, "ns") + (offset_seconds[order] * 1_000_000_000).astype("timedelta64[ns]")

    n = len(order)
    width = max(id_width, len(str(max(n - 1, 0))))
    prefix = f"sim-{config.seed}-" if id_prefix is None else id_prefix
    return pd.DataFrame({
        "transaction_id": pd.array([f"{prefix}{i:0{width}d}" for i in range(n)], dtype="str"),
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
