"""Feature definitions: one definition, computed three ways.

* **offline** (:func:`compute_features`): a DataFrame of history, for CSV backtests;
* **online** (:mod:`shared.storage.history`): one incoming transaction against the
  database, in one bounded SQL statement;
* **batch** (:mod:`shared.storage.training_data`): set-based SQL over chunks of stored
  training rows.

All three reduce the history to the same named window *aggregates*
(:meth:`FeatureSpec.aggregates`) and call the same :func:`finalize`, so a feature is
defined once and parity tests compare the three paths.

**Windows are made of time buckets** so that a lookup reads a bounded number of rows
whatever one card's or one merchant's volume. The database keeps per-bucket aggregates
(``customer_buckets``: one row per card and UTC hour; ``terminal_buckets``: one row per
terminal and UTC day), maintained when a transaction is stored and when a label changes.
A window is a range of whole buckets counted back from the transaction's own bucket b:

* customer window of n days: the 24·n whole hours before the transaction's hour, plus the
  card's transactions earlier in that same hour — buckets [b − 24n, b], the current one
  only up to the transaction. Between 24·n and 24·n + 1 hours long.
* terminal window of n days with label delay d: the n whole UTC days
  [B − d − n, B − d − 1] before the transaction's day B (labels of the last d days are
  not known yet). Never includes the current day, so a terminal is read from its day
  buckets only.
* customer habit window (when enabled): the hours [b − 24·long, b − 24·recent − 1], which
  leave out the most recent days so an ongoing takeover does not inflate the baseline.

"Earlier" means earlier in (timestamp, transaction_id) order, so ties are broken alike in
pandas and SQL. Hours, days and weekdays are UTC.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is for the offline path only: keep it out of predict's cold start
    import pandas as pd

NIGHT_LAST_HOUR = 6  # hour <= 6 is night
HOURS_PER_DAY = 24
# Names the bucket layout the definitions above assume; a model records it with its spec.
BUCKETS = "customer-hour/terminal-day"

CUSTOMER, TERMINAL = "customer", "terminal"
# Additive measures can be summed over buckets; "max" takes the largest bucket value;
# "last_fraud_day"/"first_fraud_day" are the newest/oldest day bucket holding a known fraud.
CUSTOMER_MEASURES = ("count", "sum", "sumsq", "max")
TERMINAL_MEASURES = ("count", "frauds", "last_fraud_day", "first_fraud_day")
ADDITIVE = {"count", "sum", "sumsq", "frauds"}
# Every card-hour bucket of a window is read online: keep customer windows within 30 days.
MAX_CUSTOMER_DAYS = 30
# The habit z-score divides by at least this share of the habit mean (a card paying the
# same amount every time has no spread).
HABIT_SPREAD_FLOOR = 0.1


@dataclass(frozen=True)
class Aggregate:
    """One window aggregate: ``measure`` of the ``entity``'s rows in buckets
    [b - start, b - end] (``end == 0``: the current bucket, only up to the transaction)."""

    name: str
    entity: str
    measure: str
    start: int
    end: int

    def __post_init__(self) -> None:
        measures = CUSTOMER_MEASURES if self.entity == CUSTOMER else TERMINAL_MEASURES
        if self.entity not in (CUSTOMER, TERMINAL) or self.measure not in measures:
            raise ValueError(f"unknown aggregate {self.entity}/{self.measure}")
        if not 0 <= self.end <= self.start or (self.entity == TERMINAL and self.end < 1):
            raise ValueError(f"aggregate {self.name}: bad bucket range [{self.start}, {self.end}]")


@dataclass(frozen=True)
class FeatureSpec:
    """Which features to compute. A published model stores its spec (:meth:`to_dict`) and
    serving computes exactly those features for it (:meth:`from_dict`).

    Every field added after the first release defaults to "off", so a spec stored before it
    existed keeps its meaning. The optional groups (definitions in :func:`finalize`):

    * ``customer_ratios``: the amount against the card's mean over *every* customer window,
      not only the longest;
    * ``customer_habit_days = (long, recent)``: the card's habit over the hours
      [b − 24·long, b − 24·recent − 1] — the last ``recent`` days left out, so an ongoing
      takeover does not inflate it: its count, mean, the amount against its mean, spread
      (z-score) and largest amount;
    * ``customer_recent_vs_habit`` (needs the habit): the card's recent activity against its
      habit — the largest earlier amount and the mean of the earlier amounts over each
      customer window shorter than the habit's ``recent`` part (or equal to it);
    * ``terminal_fraud_run``: over the longest terminal window, the days from the terminal's
      oldest to its newest known fraud (how long its run of fraud has lasted);
    * ``terminal_recency``: over the same window, days since the terminal's newest and oldest
      known fraud. These need the transaction's day (:func:`finalize`'s ``day``).
    """

    customer_windows: tuple[int, ...] = (1, 7, 30)
    terminal_windows: tuple[int, ...] = (1, 7, 30)
    delay_days: int = 7
    buckets: str = field(default=BUCKETS)
    customer_ratios: bool = False
    customer_habit_days: tuple[int, int] | None = None
    customer_recent_vs_habit: bool = False
    terminal_fraud_run: bool = False
    terminal_recency: bool = False

    def __post_init__(self) -> None:
        if not self.customer_windows or min(self.customer_windows) < 1:
            raise ValueError("customer_windows needs at least one window of >= 1 day")
        if not self.terminal_windows or min(self.terminal_windows) < 1 or self.delay_days < 0:
            raise ValueError("terminal_windows needs windows of >= 1 day and delay_days >= 0")
        if self.customer_habit_days is not None:
            long, recent = self.customer_habit_days
            if not 1 <= recent < long <= MAX_CUSTOMER_DAYS:
                raise ValueError(f"customer_habit_days needs 1 <= recent < long <= {MAX_CUSTOMER_DAYS}")
        if self.customer_recent_vs_habit and (self.customer_habit_days is None or not self.recent_windows):
            raise ValueError("customer_recent_vs_habit needs customer_habit_days and a customer window "
                             "no longer than the habit's recent days")

    # --- what is computed ---------------------------------------------------------------

    @property
    def recent_windows(self) -> tuple[int, ...]:
        """Customer windows compared with the habit: those within its left-out recent days."""
        if self.customer_habit_days is None:
            return ()
        return tuple(n for n in self.customer_windows if n <= self.customer_habit_days[1])

    @property
    def names(self) -> list[str]:
        return list(self._names)

    @functools.cached_property  # the spec is frozen; predict asks for its names on every request
    def _names(self) -> tuple[str, ...]:
        names = ["amount", "is_weekend", "is_night"]
        for n in self.customer_windows:
            names += [f"customer_nb_tx_{n}d", f"customer_mean_amount_{n}d"]
        longest = max(self.customer_windows)
        if self.customer_ratios:
            names += [f"amount_to_customer_mean_{n}d" for n in self.customer_windows if n != longest]
        names += [f"amount_to_customer_mean_{longest}d"]
        if self.customer_habit_days is not None:
            names += ["customer_habit_nb_tx", "customer_habit_mean_amount", "amount_to_customer_habit_mean",
                      "amount_customer_habit_zscore", "amount_to_customer_habit_max"]
        if self.customer_recent_vs_habit:
            for n in self.recent_windows:
                names += [f"customer_max_amount_{n}d_to_habit_mean", f"customer_mean_amount_{n}d_to_habit_mean"]
        for n in self.terminal_windows:
            names += [f"terminal_nb_tx_{n}d", f"terminal_risk_{n}d"]
        if self.terminal_recency:
            names += ["terminal_days_since_last_fraud", "terminal_days_since_first_fraud"]
        if self.terminal_fraud_run:
            names += ["terminal_fraud_run_days"]
        return tuple(names)

    def aggregates(self) -> list[Aggregate]:
        """The window aggregates :func:`finalize` needs, in a stable order (the terminal
        windows' counts and frauds last)."""
        return list(self._aggregates)

    @functools.cached_property
    def _aggregates(self) -> tuple[Aggregate, ...]:
        result: list[Aggregate] = []
        for n in self.customer_windows:
            result += [customer_aggregate("count", n), customer_aggregate("sum", n)]
        if self.customer_habit_days is not None:
            result += [habit_aggregate(measure, *self.customer_habit_days) for measure in CUSTOMER_MEASURES]
        if self.customer_recent_vs_habit:
            result += [customer_aggregate("max", n) for n in self.recent_windows]
        if self.terminal_recency or self.terminal_fraud_run:
            longest = max(self.terminal_windows)
            result += [terminal_aggregate(measure, longest, self.delay_days)
                       for measure in ("last_fraud_day", "first_fraud_day")]
        for n in self.terminal_windows:
            result += [terminal_aggregate("count", n, self.delay_days),
                       terminal_aggregate("frauds", n, self.delay_days)]
        return tuple(result)

    @property
    def history_days(self) -> int:
        """How many days of history before a transaction its features can read."""
        days = 0
        for aggregate in self.aggregates():
            span = aggregate.start if aggregate.entity == TERMINAL else -(-aggregate.start // HOURS_PER_DAY)
            days = max(days, span + (1 if aggregate.entity == CUSTOMER else 0))
        return days

    # --- persistence --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        """The spec a model was published with. Unknown keys are refused: a model needing a
        feature this code does not know cannot be served correctly."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"feature spec has settings this code does not know: {unknown}")
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
        # Models published before bucketed windows recorded no layout; they are served with it.
        values.setdefault("buckets", BUCKETS)
        if values["buckets"] != BUCKETS:
            raise ValueError(f"feature spec needs bucket layout {values['buckets']!r}; this code has {BUCKETS!r}")
        return cls(**values)  # type: ignore[arg-type]  # checked against the fields above


# Chosen by backtest (docs/model-selection.md): the card's habit and recent activity against
# it, terminal risk over 1/3/7/14/30 delayed days and the terminal's run of fraud.
DEFAULT_SPEC = FeatureSpec(terminal_windows=(1, 3, 7, 14, 30), customer_habit_days=(30, 7),
                           customer_recent_vs_habit=True, terminal_fraud_run=True)
FEATURE_NAMES = DEFAULT_SPEC.names
# The baseline the ML issue compares against: what a model sees without any history.
BASELINE_FEATURES = ["amount", "is_weekend", "is_night"]


@functools.lru_cache(maxsize=1024)  # immutable; predict asks for the same few dozen per request
def aggregate(entity: str, measure: str, start: int, end: int) -> Aggregate:
    """The aggregate of ``measure`` over buckets [b - start, b - end]; its name says exactly
    that, so two specs asking for the same thing share one value."""
    return Aggregate(f"{entity[0]}_{measure}_{start}_{end}", entity, measure, start, end)


def customer_aggregate(measure: str, days: int) -> Aggregate:
    """``measure`` over the card's n-day window: [b - 24n, b] in hours, up to the transaction."""
    return aggregate(CUSTOMER, measure, HOURS_PER_DAY * days, 0)


def terminal_aggregate(measure: str, days: int, delay_days: int) -> Aggregate:
    """``measure`` over the terminal's n whole days before the last ``delay_days`` days."""
    return aggregate(TERMINAL, measure, delay_days + days, delay_days + 1)


def habit_aggregate(measure: str, long: int, recent: int) -> Aggregate:
    """``measure`` over the card's habit window: hours [b - 24·long, b - 24·recent - 1]."""
    return aggregate(CUSTOMER, measure, HOURS_PER_DAY * long, HOURS_PER_DAY * recent + 1)


def union(*specs: FeatureSpec) -> list[Aggregate]:
    """Every aggregate any of ``specs`` needs, once."""
    return list({a.name: a for spec in specs for a in spec.aggregates()}.values())


def finalize(aggregates: Mapping[str, Any], amount: Any, dayofweek: Any, hour: Any,
             spec: FeatureSpec = DEFAULT_SPEC, day: Any = None) -> dict[str, Any]:
    """Turn window aggregates into features; the single definition every path shares: arrays
    (one value per transaction) or, for one transaction, Python numbers (floats come back).

    ``hour`` is the UTC hour of the day; ``day`` the transaction's UTC day bucket (days since
    1970-01-01, :func:`epoch_day`), needed only by ``terminal_recency`` (not in DEFAULT_SPEC). Customer aggregates
    exclude the transaction itself (it is added here where a feature says so); terminal
    aggregates cover the delayed windows only. Every feature is finite:

    * ``amount_to_customer_mean_{n}d``: amount / mean of the n-day window including the
      transaction (1 if that mean is not positive).
    * habit (``customer_habit_days``): ``customer_habit_nb_tx`` and
      ``customer_habit_mean_amount`` (0 without habit rows); ``amount_to_customer_habit_mean``
      and ``amount_to_customer_habit_max`` (1 without habit rows);
      ``amount_customer_habit_zscore`` = (amount − mean) / max(std, 10 % of the mean, 0.01),
      std over the habit rows (0 with fewer than two habit rows).
    * recent vs habit, per recent window n: ``customer_max_amount_{n}d_to_habit_mean`` and
      ``customer_mean_amount_{n}d_to_habit_mean``, the largest and the mean *earlier* amount
      of the window against the habit mean (0 without earlier rows in the window, 1 without
      habit rows).
    * over the longest terminal window (days [B − delay − n, B − delay − 1]), with the
      newest and oldest day holding a known fraud: ``terminal_fraud_run_days`` = newest −
      oldest + 1 (0 when none; ``terminal_fraud_run``); ``terminal_days_since_last_fraud``
      and ``terminal_days_since_first_fraud`` = B − newest / oldest (delay + n + 1, one past
      the window, when none; ``terminal_recency``, needs ``day``).
    """
    # One row (predict) runs the same expressions on Python floats: numpy's per-call overhead
    # on one-element arrays would cost predict more than the query.
    one = np.ndim(amount) == 0
    amount = float(amount) if one else np.asarray(amount, dtype=np.float64)
    features: dict[str, Any] = {
        "amount": amount,
        "is_weekend": _flag(dayofweek >= 5 if one else np.asarray(dayofweek) >= 5),  # Monday = 0
        "is_night": _flag(hour <= NIGHT_LAST_HOUR if one else np.asarray(hour) <= NIGHT_LAST_HOUR),
    }

    def value(a: Aggregate) -> Any:
        return float(aggregates[a.name]) if one else np.asarray(aggregates[a.name], dtype=np.float64)

    for n in spec.customer_windows:
        count = value(customer_aggregate("count", n)) + 1.0
        features[f"customer_nb_tx_{n}d"] = count
        features[f"customer_mean_amount_{n}d"] = (value(customer_aggregate("sum", n)) + amount) / count
    longest = max(spec.customer_windows)
    # Compromised cards show up as amounts far above the card's own habit.
    for n in spec.customer_windows if spec.customer_ratios else (longest,):
        features[f"amount_to_customer_mean_{n}d"] = _ratio(amount, features[f"customer_mean_amount_{n}d"], 1.0)

    if spec.customer_habit_days is not None:
        long, recent = spec.customer_habit_days
        count, total, squares, largest = (value(habit_aggregate(m, long, recent)) for m in CUSTOMER_MEASURES)
        some = count > 0
        mean = _ratio(total, count, 0.0)
        variance = _ratio(squares, count, 0.0) - mean * mean
        spread = _maximum(_sqrt(_maximum(variance, 0.0)), _maximum(HABIT_SPREAD_FLOOR * mean, 0.01))
        features["customer_habit_nb_tx"] = count
        features["customer_habit_mean_amount"] = mean
        features["amount_to_customer_habit_mean"] = _ratio(amount, mean, 1.0)
        features["amount_customer_habit_zscore"] = _where(count >= 2, (amount - mean) / spread, 0.0)
        features["amount_to_customer_habit_max"] = _ratio(amount, _where(some, largest, 0.0), 1.0)
        if spec.customer_recent_vs_habit:
            for n in spec.recent_windows:
                earlier = value(customer_aggregate("count", n))
                seen = earlier > 0
                recent_max = _where(seen, value(customer_aggregate("max", n)), 0.0)
                recent_mean = _ratio(value(customer_aggregate("sum", n)), earlier, 0.0)
                features[f"customer_max_amount_{n}d_to_habit_mean"] = _where(seen, _ratio(recent_max, mean, 1.0), 0.0)
                features[f"customer_mean_amount_{n}d_to_habit_mean"] = _where(seen, _ratio(recent_mean, mean, 1.0), 0.0)

    for n in spec.terminal_windows:
        count = value(terminal_aggregate("count", n, spec.delay_days))
        frauds = value(terminal_aggregate("frauds", n, spec.delay_days))
        features[f"terminal_nb_tx_{n}d"] = count
        features[f"terminal_risk_{n}d"] = _ratio(frauds, count, 0.0)

    if spec.terminal_recency or spec.terminal_fraud_run:
        window = max(spec.terminal_windows)
        newest = value(terminal_aggregate("last_fraud_day", window, spec.delay_days))
        oldest = value(terminal_aggregate("first_fraud_day", window, spec.delay_days))
        known = (not (math.isnan(newest) or math.isnan(oldest))) if one else ~np.isnan(newest) & ~np.isnan(oldest)
        newest, oldest = _where(known, newest, 0.0), _where(known, oldest, 0.0)
        if spec.terminal_recency:
            if day is None:
                raise ValueError("terminal_recency needs the transactions' day buckets (finalize(..., day=...))")
            day = float(day) if one else np.asarray(day, dtype=np.float64)
            none = float(spec.delay_days + window + 1)
            features["terminal_days_since_last_fraud"] = _where(known, day - newest, none)
            features["terminal_days_since_first_fraud"] = _where(known, day - oldest, none)
        if spec.terminal_fraud_run:
            features["terminal_fraud_run_days"] = _where(known, newest - oldest + 1.0, 0.0)
    return features


# Element-wise helpers of finalize, for arrays and for one row's Python floats alike.


def _ratio(numerator: Any, denominator: Any, otherwise: float) -> Any:
    """numerator / denominator where the denominator is positive, else ``otherwise``."""
    if isinstance(denominator, float):
        return numerator / denominator if denominator > 0 else otherwise
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    if numerator.shape != denominator.shape:
        numerator, denominator = np.broadcast_arrays(numerator, denominator)
    return np.divide(numerator, denominator, out=np.full(numerator.shape, otherwise), where=denominator > 0)


def _where(condition: Any, chosen: Any, otherwise: Any) -> Any:
    if isinstance(condition, bool):
        return chosen if condition else otherwise
    return np.where(condition, chosen, otherwise)


def _maximum(a: Any, b: Any) -> Any:
    if isinstance(a, float) and isinstance(b, float):
        return a if a >= b else b  # finite here, so no NaN rule is needed
    return np.maximum(a, b)


def _sqrt(a: Any) -> Any:
    return math.sqrt(a) if isinstance(a, float) else np.sqrt(a)


def _flag(condition: Any) -> Any:
    return float(condition) if isinstance(condition, bool) else condition.astype(np.float64)


# --- bucket keys ------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def epoch_hour(timestamp: datetime) -> int:
    """The UTC hour bucket of an instant (hours since 1970-01-01T00:00Z); naive means UTC."""
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=timezone.utc)
    return int((timestamp - _EPOCH).total_seconds() // 3600)


def epoch_day(hour: int) -> int:
    """The UTC day bucket of an hour bucket."""
    return hour // HOURS_PER_DAY


def epoch_days(when: pd.DatetimeIndex) -> np.ndarray:
    """The UTC day buckets of many instants (for :func:`finalize`'s ``day``)."""
    instants = when.tz_convert(None) if when.tz is not None else when
    return instants.to_numpy().astype("datetime64[D]").astype(np.int64)


def bucket_of(entity: str, hour: int) -> int:
    """The bucket index an entity's aggregates use for a transaction in ``hour``."""
    return hour if entity == CUSTOMER else epoch_day(hour)


def empty_value(measure: str) -> float:
    """What a measure is over no rows (also the degraded fallback)."""
    return 0.0 if measure in ADDITIVE else float("nan")


# --- offline: a whole DataFrame of history ----------------------------------------------


class _BucketTable:
    """Per (entity, bucket) aggregates of a history, for window queries by binary search."""

    # entity code * KEY_STRIDE + bucket: one sortable int64 per (entity, bucket).
    KEY_STRIDE = 1 << 22  # hours since 1970 stay below 2**22 until the year 2448

    def __init__(self, codes: np.ndarray, buckets: np.ndarray, values: dict[str, np.ndarray],
                 largest: np.ndarray | None = None):
        import pandas as pd

        frame = pd.DataFrame({"key": codes.astype(np.int64) * self.KEY_STRIDE + buckets, **values})
        grouped = frame.groupby("key", sort=True)
        sums = grouped.sum()
        self.keys = sums.index.to_numpy()
        self.bucket = self.keys % self.KEY_STRIDE
        self.per_bucket = {name: sums[name].to_numpy() for name in values}
        # The largest of ``largest`` (the amounts) per bucket, for "max" aggregates.
        self.bucket_max = (None if largest is None else
                           pd.Series(largest).groupby(frame["key"].to_numpy()).max().to_numpy())
        entity_of_key = self.keys // self.KEY_STRIDE
        # Cumulative sums restart per entity, which keeps their magnitude (and float error) small.
        self._cumulative = {
            name: np.concatenate([[0.0], pd.Series(column).groupby(entity_of_key).cumsum().to_numpy()])
            for name, column in self.per_bucket.items()
        }
        self._sparse: dict[str, list[np.ndarray]] = {}

    def query_rows(self, codes: np.ndarray, buckets: np.ndarray) -> None:
        """The rows whose windows the ``window_*`` methods return. They are searched in key
        order (sorted needles make binary search several times faster) and the results are
        put back in row order."""
        row_keys = codes.astype(np.int64) * self.KEY_STRIDE + buckets
        self._order = np.argsort(row_keys, kind="stable")
        self._row_keys = row_keys[self._order]
        base = self._row_keys - self._row_keys % self.KEY_STRIDE
        self._start_of_run = np.searchsorted(self.keys, base, side="left")

    def _bounds(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions of buckets [b - start, b - end] of each query row, in key order."""
        first = np.searchsorted(self.keys, self._row_keys - start, side="left")
        last = np.searchsorted(self.keys, self._row_keys - end, side="right")
        return first, np.maximum(last, first)

    def _in_row_order(self, values: np.ndarray) -> np.ndarray:
        result = np.empty_like(values)
        result[self._order] = values
        return result

    def window_sum(self, name: str, start: int, end: int) -> np.ndarray:
        """Sum of the per-bucket ``name`` over buckets [b - start, b - end] of each query row."""
        first, last = self._bounds(start, end)
        cumulative = self._cumulative[name]
        # Both ends lie within one entity's run of keys; its cumulative sums restart at the
        # run's first key, so subtract the value just before the window within the run.
        before = np.where(first > self._start_of_run, cumulative[first], 0.0)
        after = np.where(last > self._start_of_run, cumulative[last], 0.0)
        return self._in_row_order(np.where(last > first, after - before, 0.0))

    def window_extreme(self, name: str, values: np.ndarray, start: int, end: int, largest: bool) -> np.ndarray:
        """Largest (or smallest) per-bucket ``values`` over buckets [b - start, b - end] of
        each query row; NaN when empty."""
        first, last = self._bounds(start, end)
        table = self._sparse_table(name, values, largest)
        length = last - first
        result = np.full(len(first), np.nan)
        present = length > 0
        level = np.zeros(len(first), dtype=np.int64)
        level[present] = np.floor(np.log2(length[present])).astype(np.int64)
        pick = np.fmax if largest else np.fmin
        for k in np.unique(level[present]):
            rows = np.flatnonzero(present & (level == k))
            left = table[k][first[rows]]
            right = table[k][last[rows] - (1 << k)]
            result[rows] = pick(left, right)
        return self._in_row_order(result)

    def _sparse_table(self, name: str, values: np.ndarray, largest: bool) -> list[np.ndarray]:
        """Range-extreme queries in O(1): level k holds the extreme of 2**k consecutive buckets."""
        if name not in self._sparse:
            pick = np.fmax if largest else np.fmin  # NaN (no value in a bucket) loses
            levels = [np.asarray(values, dtype=np.float64)]
            while (1 << len(levels)) <= len(values):
                previous, width = levels[-1], 1 << (len(levels) - 1)
                levels.append(pick(previous[:-width], previous[width:]))
            self._sparse[name] = levels
        return self._sparse[name]


def compute_features(history: pd.DataFrame, spec: FeatureSpec = DEFAULT_SPEC) -> pd.DataFrame:
    """Point-in-time features for every row of ``history``.

    ``history`` needs ``transaction_id, timestamp (UTC), customer_id, terminal_id, amount``
    and optionally ``label`` (1 fraud, 0 genuine, NaN unknown — counted as not fraud).
    Returns a frame indexed like ``history`` with one column per ``spec.names``.
    """
    import pandas as pd

    aggregates = compute_aggregates(history, spec)
    when = pd.DatetimeIndex(pd.to_datetime(history["timestamp"], utc=True))
    features = finalize(aggregates, history["amount"].astype(np.float64).to_numpy(),
                        when.day_of_week.to_numpy(), when.hour.to_numpy(), spec, day=epoch_days(when))
    return pd.DataFrame(features, index=history.index)[spec.names]


def compute_aggregates(history: pd.DataFrame, spec: FeatureSpec = DEFAULT_SPEC,
                       wanted: list[Aggregate] | None = None) -> dict[str, np.ndarray]:
    """The window aggregates of every row of ``history`` (arrays in the frame's row order):
    ``spec``'s, or the ``wanted`` ones."""
    import pandas as pd

    n = len(history)
    timestamps = pd.to_datetime(history["timestamp"], utc=True)
    nanos = timestamps.dt.tz_convert(None).to_numpy().astype("datetime64[ns]").astype(np.int64)
    hour = nanos // (3600 * 10**9)
    amount = history["amount"].astype(np.float64).to_numpy()
    fraud = (pd.to_numeric(history["label"], errors="coerce").fillna(0).to_numpy(np.float64) == 1).astype(
        np.float64) if "label" in history else np.zeros(n)
    customer = pd.factorize(history["customer_id"].astype(str))[0]
    terminal = pd.factorize(history["terminal_id"].astype(str))[0]
    wanted = spec.aggregates() if wanted is None else wanted
    result: dict[str, np.ndarray] = {}

    customer_aggregates = [a for a in wanted if a.entity == CUSTOMER]
    if customer_aggregates:
        table = _BucketTable(customer, hour, {"count": np.ones(n), "sum": amount, "sumsq": amount * amount},
                             largest=amount if any(a.measure == "max" for a in customer_aggregates) else None)
        table.query_rows(customer, hour)
        partial = _current_hour_before(history, customer, hour, amount, nanos)
        for a in customer_aggregates:
            if a.measure == "max":
                assert table.bucket_max is not None  # built above when a max is wanted
                value = table.window_extreme("max", table.bucket_max, a.start, max(a.end, 1), largest=True)
                if a.end == 0:
                    value = np.fmax(value, partial["max"])
            else:
                value = table.window_sum(a.measure, a.start, max(a.end, 1))
                if a.end == 0:
                    value = value + partial[a.measure]
            result[a.name] = value

    terminal_aggregates = [a for a in wanted if a.entity == TERMINAL]
    if terminal_aggregates:
        day = hour // HOURS_PER_DAY
        table = _BucketTable(terminal, day, {"count": np.ones(n), "frauds": fraud})
        table.query_rows(terminal, day)
        fraud_days = np.where(table.per_bucket["frauds"] > 0.5, table.bucket.astype(np.float64), np.nan)
        for a in terminal_aggregates:
            if a.measure in ADDITIVE:
                result[a.name] = table.window_sum(a.measure, a.start, a.end)
            else:
                result[a.name] = table.window_extreme(a.measure, fraud_days, a.start, a.end,
                                                      largest=a.measure == "last_fraud_day")
    # Sums of counts are integers by definition; float summation must not say otherwise.
    for a in wanted:
        if a.measure in ("count", "frauds"):
            result[a.name] = np.rint(result[a.name])
    return result


def _current_hour_before(history: pd.DataFrame, customer: np.ndarray, hour: np.ndarray,
                         amount: np.ndarray, nanos: np.ndarray) -> dict[str, np.ndarray]:
    """Per row: count, sum, sum of squares and max of the card's rows earlier in the same hour."""
    import pandas as pd

    ids = history["transaction_id"].astype(str).to_numpy()
    order = np.lexsort((ids, nanos))  # (timestamp, transaction_id) order
    frame = pd.DataFrame({"group": (customer.astype(np.int64) * _BucketTable.KEY_STRIDE + hour)[order],
                          "amount": amount[order]})
    grouped = frame.groupby("group", sort=False)["amount"]
    count = grouped.cumcount().to_numpy(np.float64)
    total = grouped.cumsum().to_numpy() - frame["amount"].to_numpy()
    squares = frame["amount"] ** 2
    total_squares = squares.groupby(frame["group"], sort=False).cumsum().to_numpy() - squares.to_numpy()
    running_max = grouped.cummax()
    previous_max = running_max.groupby(frame["group"], sort=False).shift(1).to_numpy(np.float64)
    unsorted = {}
    for name, values in (("count", count), ("sum", total), ("sumsq", total_squares), ("max", previous_max)):
        out = np.empty(len(values))
        out[order] = values
        unsorted[name] = out
    # An empty partial hour adds nothing; float cumsum differences of exact zeros stay zero.
    unsorted["sum"][unsorted["count"] == 0] = 0.0
    unsorted["sumsq"][unsorted["count"] == 0] = 0.0
    return unsorted


# --- online: one transaction's aggregates → features -----------------------------------


def features_for_one(aggregates: Mapping[str, float], amount: float, timestamp: datetime,
                     spec: FeatureSpec = DEFAULT_SPEC) -> dict[str, float]:
    """Features of one transaction from its window aggregates (see :func:`finalize`)."""
    timestamp = timestamp.astimezone(timezone.utc) if timestamp.tzinfo else timestamp
    features = finalize(aggregates, float(amount), timestamp.weekday(), timestamp.hour, spec,
                        day=epoch_day(epoch_hour(timestamp)))
    return {name: float(features[name]) for name in spec.names}


def empty_aggregates(spec: FeatureSpec = DEFAULT_SPEC) -> dict[str, float]:
    """Aggregates of an empty history: the documented fallback when history can't be read."""
    return {a.name: empty_value(a.measure) for a in spec.aggregates()}
