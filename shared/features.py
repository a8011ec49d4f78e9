"""Feature definitions, computed offline (a DataFrame of history) and online (one
incoming transaction against the history stored in the database).

Both paths reduce the history to the same window aggregates (counts, amount sums,
fraud counts) and then call the same :func:`finalize` to turn aggregates into
features, so a feature is defined once. The windows follow the ULB handbook:

* customer windows of n days ending at the transaction, including it: (t - n, t];
* terminal windows of n days shifted back by the label delay d: (t - d - n, t - d],
  because whether a recent terminal transaction was fraud is not known yet.

"Earlier" means earlier in (timestamp, transaction_id) order, so ties are broken the
same way in pandas and in SQL. Hours and weekdays are taken in UTC.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Mapping

import numpy as np

if TYPE_CHECKING:  # pandas is for the offline path only: keep it out of predict's cold start
    import pandas as pd

NIGHT_LAST_HOUR = 6  # hour <= 6 is night


@dataclass(frozen=True)
class FeatureSpec:
    """Which windows to compute. The defaults are the handbook's."""

    customer_windows: tuple[int, ...] = (1, 7, 30)
    terminal_windows: tuple[int, ...] = (1, 7, 30)
    delay_days: int = 7

    @property
    def names(self) -> list[str]:
        names = ["amount", "is_weekend", "is_night"]
        for n in self.customer_windows:
            names += [f"customer_nb_tx_{n}d", f"customer_mean_amount_{n}d"]
        names += [f"amount_to_customer_mean_{max(self.customer_windows)}d"]
        for n in self.terminal_windows:
            names += [f"terminal_nb_tx_{n}d", f"terminal_risk_{n}d"]
        return names

    @property
    def history_days(self) -> int:
        """How far back the online path must read."""
        return max(max(self.customer_windows), self.delay_days + max(self.terminal_windows))


DEFAULT_SPEC = FeatureSpec()
FEATURE_NAMES = DEFAULT_SPEC.names
# The baseline the ML issue compares against: what a model sees without any history.
BASELINE_FEATURES = ["amount", "is_weekend", "is_night"]


def customer_aggregate_keys(n: int) -> tuple[str, str]:
    """Names of the (count, amount sum) aggregates of the n-day customer window."""
    return f"customer_count_{n}d", f"customer_sum_{n}d"


def terminal_aggregate_keys(n: int) -> tuple[str, str]:
    """Names of the (count, fraud count) aggregates of the n-day delayed terminal window."""
    return f"terminal_count_{n}d", f"terminal_frauds_{n}d"


def finalize(aggregates: Mapping[str, np.ndarray], amount: np.ndarray, dayofweek: np.ndarray,
             hour: np.ndarray, spec: FeatureSpec = DEFAULT_SPEC) -> dict[str, np.ndarray]:
    """Turn window aggregates into features; the single definition both paths share.

    Customer aggregates exclude the transaction itself (it is added here); terminal
    aggregates cover the delayed window only.
    """
    amount = np.asarray(amount, dtype=np.float64)
    features: dict[str, np.ndarray] = {
        "amount": amount,
        "is_weekend": (np.asarray(dayofweek) >= 5).astype(np.float64),  # Monday = 0
        "is_night": (np.asarray(hour) <= NIGHT_LAST_HOUR).astype(np.float64),
    }
    for n in spec.customer_windows:
        count_key, sum_key = customer_aggregate_keys(n)
        count = np.asarray(aggregates[count_key], dtype=np.float64) + 1.0
        features[f"customer_nb_tx_{n}d"] = count
        features[f"customer_mean_amount_{n}d"] = (np.asarray(aggregates[sum_key], dtype=np.float64) + amount) / count
    longest = max(spec.customer_windows)
    mean_longest = features[f"customer_mean_amount_{longest}d"]
    # Compromised cards show up as amounts far above the card's own habit.
    features[f"amount_to_customer_mean_{longest}d"] = np.divide(
        amount, mean_longest, out=np.ones_like(amount), where=mean_longest > 0
    )
    for n in spec.terminal_windows:
        count_key, frauds_key = terminal_aggregate_keys(n)
        count = np.asarray(aggregates[count_key], dtype=np.float64)
        frauds = np.asarray(aggregates[frauds_key], dtype=np.float64)
        features[f"terminal_nb_tx_{n}d"] = count
        features[f"terminal_risk_{n}d"] = np.divide(frauds, count, out=np.zeros_like(count), where=count > 0)
    return features


# --- offline: a whole DataFrame of history ------------------------------------------


def _rolling_sums(frame: "pd.DataFrame", group: str, values: list[str], days: int) -> "pd.DataFrame":
    """Per group, sums of ``values`` over (t - days, t] including the row itself and the
    rows before it in order; ``frame`` must be sorted by (timestamp, transaction_id)."""
    rolled = (
        frame.groupby(group, sort=False)[["timestamp", *values]]
        .rolling(f"{days}D", on="timestamp", closed="right")
        .sum()
    )
    rolled.index = rolled.index.droplevel(0)
    return rolled[values].reindex(frame.index)


def compute_features(history: "pd.DataFrame", spec: FeatureSpec = DEFAULT_SPEC) -> "pd.DataFrame":
    """Point-in-time features for every row of ``history``.

    ``history`` needs ``transaction_id, timestamp (UTC), customer_id, terminal_id, amount``
    and optionally ``label`` (1 fraud, 0 genuine, NaN unknown — counted as not fraud).
    Returns a frame indexed like ``history`` with one column per ``spec.names``.
    """
    import pandas as pd

    frame = pd.DataFrame({
        "transaction_id": history["transaction_id"].astype(str).to_numpy(),
        "timestamp": pd.to_datetime(history["timestamp"], utc=True).to_numpy(),
        "customer_id": history["customer_id"].to_numpy(),
        "terminal_id": history["terminal_id"].to_numpy(),
        "amount": history["amount"].astype(np.float64).to_numpy(),
        "one": 1.0,
        "fraud": (pd.to_numeric(history["label"], errors="coerce").fillna(0).astype(np.float64).to_numpy()
                  if "label" in history else 0.0),
    }, index=history.index)
    order = np.lexsort((frame["transaction_id"].to_numpy(), frame["timestamp"].to_numpy()))
    frame = frame.iloc[order]

    aggregates: dict[str, np.ndarray] = {}
    for n in spec.customer_windows:
        sums = _rolling_sums(frame, "customer_id", ["one", "amount"], n)
        count_key, sum_key = customer_aggregate_keys(n)
        # The rolling window includes the row itself; aggregates describe the history before it.
        aggregates[count_key] = sums["one"].to_numpy() - 1.0
        aggregates[sum_key] = sums["amount"].to_numpy() - frame["amount"].to_numpy()
    delay = spec.delay_days
    recent = _rolling_sums(frame, "terminal_id", ["one", "fraud"], delay) if delay > 0 else None
    for n in spec.terminal_windows:
        wide = _rolling_sums(frame, "terminal_id", ["one", "fraud"], delay + n)
        count_key, frauds_key = terminal_aggregate_keys(n)
        # (t-d-n, t] minus (t-d, t] = (t-d-n, t-d]: the window whose labels are known.
        if recent is not None:
            aggregates[count_key] = (wide["one"] - recent["one"]).to_numpy()
            aggregates[frauds_key] = (wide["fraud"] - recent["fraud"]).to_numpy()
        else:
            aggregates[count_key] = wide["one"].to_numpy()
            aggregates[frauds_key] = wide["fraud"].to_numpy()
    # Rolling sums accumulate float error; counts are integers by definition.
    for key, values in aggregates.items():
        if "count" in key or "frauds" in key:
            aggregates[key] = np.rint(values)

    when = pd.DatetimeIndex(frame["timestamp"])
    features = finalize(aggregates, frame["amount"].to_numpy(), when.day_of_week.to_numpy(), when.hour.to_numpy(), spec)
    result = pd.DataFrame(features, index=frame.index)[spec.names]
    return result.reindex(history.index)


# --- online: one transaction against stored history ---------------------------------


def online_window_bounds(timestamp: datetime, spec: FeatureSpec = DEFAULT_SPEC) -> dict[str, datetime]:
    """Window start/end instants for one transaction at ``timestamp`` (naive UTC)."""
    bounds = {f"customer_start_{n}d": timestamp - timedelta(days=n) for n in spec.customer_windows}
    terminal_end = timestamp - timedelta(days=spec.delay_days)
    bounds["terminal_end"] = terminal_end
    for n in spec.terminal_windows:
        bounds[f"terminal_start_{n}d"] = terminal_end - timedelta(days=n)
    return bounds


def features_for_one(aggregates: Mapping[str, float], amount: float, timestamp: datetime,
                     spec: FeatureSpec = DEFAULT_SPEC) -> dict[str, float]:
    """Features of one transaction from its window aggregates (see :func:`finalize`)."""
    arrays = {key: np.array([value], dtype=np.float64) for key, value in aggregates.items()}
    features = finalize(arrays, np.array([amount]), np.array([timestamp.weekday()]), np.array([timestamp.hour]), spec)
    return {name: float(features[name][0]) for name in spec.names}


def empty_aggregates(spec: FeatureSpec = DEFAULT_SPEC) -> dict[str, float]:
    """Aggregates of an empty history: the documented fallback when history can't be read."""
    aggregates: dict[str, float] = {}
    for n in spec.customer_windows:
        aggregates.update(dict.fromkeys(customer_aggregate_keys(n), 0.0))
    for n in spec.terminal_windows:
        aggregates.update(dict.fromkeys(terminal_aggregate_keys(n), 0.0))
    return aggregates
