"""Out-of-time backtest of the fraud model on a labeled CSV history.

The protocol follows the ULB handbook "Reproducible Machine Learning for Credit Card
Fraud Detection" (Le Borgne et al.), re-implemented here:

* features are computed point-in-time over the whole file, once;
* fold k trains on ``train_days`` days starting ``step_days * k`` days before
  ``train_start``, skips ``delay_days`` (labels not yet known when the model would be
  trained) and tests on the next ``test_days`` days;
* test transactions of customers already *known compromised* are removed: on test day
  D, a customer is known compromised when they have a fraud on any day from the fold's
  first training day up to D - delay - 1 (the labels an investigator would have by D);
* metrics per fold on the remaining test transactions: AUC ROC, average precision and
  card precision@k (see :func:`card_precision_at_k`).

Days are UTC calendar days. Rows whose label is missing are kept for the features
(which count them as genuine) but neither train nor score a model.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from .features import BASELINE_FEATURES, DEFAULT_SPEC, FeatureSpec
from .training import TrainingParams, fit_pipeline

DEFAULT_TOP_K = 100
# The default before issue #10 (16 features); every optional group is measured on top of it.
V1_SPEC = FeatureSpec()
# The handbook's features: V1 but the ratio to the card's 30-day mean, which this project added.
HANDBOOK_FEATURES = [name for name in V1_SPEC.names if not name.startswith("amount_to_customer_mean_")]
# One spec holding every feature a named set uses: the backtest computes it once and picks
# the set's columns (a feature's value does not depend on which others are computed).
HABIT_DAYS = (30, 7)
EXTRA_TERMINAL_WINDOWS = (1, 3, 7, 14, 30)
ABLATION_SPEC = FeatureSpec(terminal_windows=EXTRA_TERMINAL_WINDOWS, customer_ratios=True,
                            customer_habit_days=HABIT_DAYS, customer_recent_vs_habit=True, terminal_fraud_run=True,
                            terminal_recency=True)
_V1 = V1_SPEC.names
_RECENCY = ["terminal_days_since_last_fraud", "terminal_days_since_first_fraud", "terminal_fraud_run_days"]


def _all_but(*groups: list[str]) -> list[str]:
    """ABLATION_SPEC's features without the groups' own (V1's stay)."""
    dropped = {name for group in groups for name in group} - set(_V1)
    return [name for name in ABLATION_SPEC.names if name not in dropped]


FEATURE_SETS: dict[str, list[str]] = {
    "full": list(DEFAULT_SPEC.names),  # what a model trained today uses
    "baseline": list(BASELINE_FEATURES),
    "handbook": HANDBOOK_FEATURES,
    "v1": list(_V1),
    # one group on top of v1
    "v1+ratios": FeatureSpec(customer_ratios=True).names,
    "v1+habit": FeatureSpec(customer_habit_days=HABIT_DAYS).names,
    "v1+habit+recent": FeatureSpec(customer_habit_days=HABIT_DAYS, customer_recent_vs_habit=True).names,
    "v1+terminal_windows": FeatureSpec(terminal_windows=EXTRA_TERMINAL_WINDOWS).names,
    "v1+recency": FeatureSpec(terminal_recency=True, terminal_fraud_run=True).names,
    # recency without the transaction's day: only the length of the run of fraud
    "v1+run": FeatureSpec(terminal_fraud_run=True).names,
    "all": list(ABLATION_SPEC.names),
}
# every group but one
_GROUPS = {
    "ratios": FEATURE_SETS["v1+ratios"], "habit+recent": FEATURE_SETS["v1+habit+recent"],
    "recent": [name for name in FEATURE_SETS["v1+habit+recent"] if name not in FEATURE_SETS["v1+habit"]],
    "terminal_windows": FEATURE_SETS["v1+terminal_windows"], "recency": _RECENCY,
    "days": _RECENCY[:2],  # recency without the features that need the transaction's day
}
FEATURE_SETS.update({f"all-{group}": _all_but(names) for group, names in _GROUPS.items()})
assert all(set(names) <= set(ABLATION_SPEC.names) for names in FEATURE_SETS.values())


_EPOCH = date(1970, 1, 1)


# --- fold windows ---------------------------------------------------------------------


@dataclass(frozen=True)
class FoldWindows:
    """Day ranges of one fold; every ``*_end`` is exclusive (the first day after the range)."""

    fold: int
    train_start: date
    train_end: date  # = first delay day
    test_start: date  # = train_end + delay
    test_end: date

    def as_dict(self) -> dict[str, Any]:
        """Inclusive [first, last] ISO days of train, delay (None if empty) and test."""
        last = timedelta(days=1)
        delay = None if self.test_start == self.train_end else [
            self.train_end.isoformat(), (self.test_start - last).isoformat()]
        return {
            "train": [self.train_start.isoformat(), (self.train_end - last).isoformat()],
            "delay": delay,
            "test": [self.test_start.isoformat(), (self.test_end - last).isoformat()],
        }


def fold_windows(train_start: date, folds: int = 1, train_days: int = 7, delay_days: int = 7,
                 test_days: int = 7, step_days: int = 7) -> list[FoldWindows]:
    """Windows of folds 0..folds-1; fold k starts training ``step_days * k`` days before ``train_start``."""
    if folds < 1 or train_days < 1 or test_days < 1 or delay_days < 0 or step_days < 1:
        raise ValueError("folds, train_days, test_days and step_days must be >= 1; delay_days >= 0")
    windows = []
    for k in range(folds):
        start = train_start - timedelta(days=step_days * k)
        train_end = start + timedelta(days=train_days)
        test_start = train_end + timedelta(days=delay_days)
        windows.append(FoldWindows(k, start, train_end, test_start, test_start + timedelta(days=test_days)))
    return windows


def day_number(day: date) -> int:
    """Days since 1970-01-01, the unit :func:`day_numbers` uses."""
    return (day - _EPOCH).days


def day_numbers(timestamps: Iterable[Any]) -> np.ndarray:
    """UTC calendar day of each timestamp, as days since 1970-01-01 (int64)."""
    instants = pd.to_datetime(pd.Series(timestamps), utc=True).dt.tz_convert(None).to_numpy()
    return instants.astype("datetime64[D]").astype(np.int64)


# --- the handbook's evaluation rules --------------------------------------------------


def known_compromised(day: np.ndarray, customer: Sequence[Any] | np.ndarray, label: np.ndarray,
                      first_train_day: int, delay_days: int) -> np.ndarray:
    """For every row, whether its customer is already known compromised on the row's day D.

    Known compromised: a fraud (label 1) of the customer on some day in
    [first_train_day, D - delay_days - 1]. Those frauds are the training window's and the
    part of the delay period whose labels have arrived by D; such cards are blocked
    already, so scoring their transactions again would flatter the model.
    """
    day = np.asarray(day, dtype=np.int64)
    codes, uniques = pd.factorize(np.asarray(customer))
    label = np.asarray(label, dtype=np.float64)
    counted = (label == 1) & (day >= first_train_day)
    never = np.iinfo(np.int64).max
    first_fraud_day = np.full(len(uniques), never, dtype=np.int64)
    np.minimum.at(first_fraud_day, codes[counted], day[counted])
    return first_fraud_day[codes] <= day - delay_days - 1


def card_precision_at_k(day: np.ndarray, customer: Sequence[Any], label: np.ndarray, score: np.ndarray,
                        k: int = DEFAULT_TOP_K) -> tuple[float, list[float]]:
    """Mean over days of the daily card precision@k, and the daily values.

    Each day (in order), a customer's score is their highest transaction score that day
    and they are compromised if any of their transactions that day is a fraud. The k
    highest-scoring customers (ties: lower customer id first, so results are
    reproducible) are what investigators would check; the day's value is the number of
    compromised customers among them divided by k, even when fewer than k customers
    remain. Customers *detected* on an earlier day — in that day's top k and compromised
    that day — are removed from every later day, since their card is blocked by then.
    Days without rows do not count; NaN when there is no day at all.
    """
    frame = pd.DataFrame({
        "day": np.asarray(day, dtype=np.int64),
        "customer": np.asarray(customer),
        "compromised": np.asarray(label, dtype=np.float64) == 1,
        "score": np.asarray(score, dtype=np.float64),
    })
    per_customer = frame.groupby(["day", "customer"], sort=True).agg(
        score=("score", "max"), compromised=("compromised", "max")).reset_index()
    detected: set[Any] = set()
    daily: list[float] = []
    for _, today in per_customer.groupby("day", sort=True):
        candidates = today[~today["customer"].isin(detected)]
        top = candidates.sort_values(["score", "customer"], ascending=[False, True], kind="stable").head(k)
        hits = top.loc[top["compromised"], "customer"]
        daily.append(len(hits) / k)
        detected.update(hits.tolist())
    return (float(np.mean(daily)) if daily else float("nan")), daily


def _ranking_metrics(label: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """AUC ROC and average precision; NaN when the rows hold a single class."""
    if 0 < label.sum() < len(label):
        return float(roc_auc_score(label, score)), float(average_precision_score(label, score))
    return float("nan"), float("nan")


# --- running the folds ----------------------------------------------------------------


@dataclass(frozen=True)
class BacktestConfig:
    """The fold layout and the card precision cut-off."""

    train_start: date
    folds: int = 1
    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7
    step_days: int = 7
    top_k: int = DEFAULT_TOP_K
    # Train as production does at TRAINING_MAX_ROWS: the guard partition left out, genuine rows
    # (and frauds past half the cap) sampled by the hash of their id. None: every labeled row.
    max_train_rows: int | None = None

    def windows(self) -> list[FoldWindows]:
        return fold_windows(self.train_start, self.folds, self.train_days, self.delay_days,
                            self.test_days, self.step_days)

    @property
    def card_precision_key(self) -> str:
        return f"card_precision_at_{self.top_k}"


class BacktestDataError(ValueError):
    """The history does not cover the requested folds."""


def check_coverage(days: np.ndarray, config: BacktestConfig, warmup_days: int) -> list[str]:
    """Raise if the history misses a fold's days; return warnings about a short feature warm-up."""
    if len(days) == 0:
        raise BacktestDataError("the history is empty")
    windows = config.windows()
    first_needed = day_number(min(w.train_start for w in windows))
    last_needed = day_number(max(w.test_end for w in windows)) - 1
    first_day, last_day = int(days.min()), int(days.max())
    if first_day > first_needed or last_day < last_needed:
        raise BacktestDataError(
            f"the folds need days {_iso(first_needed)}..{_iso(last_needed)}; "
            f"the history covers {_iso(first_day)}..{_iso(last_day)}")
    if first_needed - first_day < warmup_days:
        return [f"the earliest training day {_iso(first_needed)} is less than {warmup_days} days after the "
                f"first day of history {_iso(first_day)}: its window features are computed on partial history"]
    return []


def run_fold(windows: FoldWindows, X: np.ndarray, days: np.ndarray, customers: np.ndarray,
             labels: np.ndarray, params: TrainingParams, config: BacktestConfig,
             keys: np.ndarray | None = None) -> dict[str, Any]:
    """Train and score one fold. ``X`` holds the chosen features of every row of the history;
    ``keys`` their sample keys (needed with ``config.max_train_rows``)."""
    labeled = ~np.isnan(labels)
    train_start, train_end = day_number(windows.train_start), day_number(windows.train_end)
    test_start, test_end = day_number(windows.test_start), day_number(windows.test_end)
    train = labeled & (days >= train_start) & (days < train_end)
    if config.max_train_rows is not None:
        assert keys is not None, "a capped backtest needs the rows' sample keys"
        train = capped_training(train, labels, keys, config.max_train_rows)
    # Every fraud the rule can use lies in [train_start, test_end): look at those rows only.
    window = np.flatnonzero((days >= train_start) & (days < test_end))
    blocked = known_compromised(days[window], customers[window], labels[window], train_start, config.delay_days)
    in_test = labeled[window] & (days[window] >= test_start)
    test_positions = window[in_test & ~blocked]
    removed = int((in_test & blocked).sum())

    started = time.perf_counter()
    pipeline = fit_pipeline(X[train], labels[train].astype(np.int64), params)
    train_seconds = time.perf_counter() - started
    y_test = labels[test_positions].astype(np.int64)
    scores = pipeline.predict_proba(X[test_positions])[:, 1] if len(test_positions) else np.zeros(0)
    auc, ap = _ranking_metrics(y_test, scores)
    card_precision, daily = card_precision_at_k(days[test_positions], customers[test_positions], y_test,
                                                scores, config.top_k)
    return {
        "fold": windows.fold,
        **windows.as_dict(),
        "train_rows": int(train.sum()),
        "train_frauds": int(labels[train].sum()),
        "test_rows": int(len(test_positions)),
        "test_frauds": int(y_test.sum()),
        "removed_known_compromised_rows": removed,
        "auc_roc": auc,
        "average_precision": ap,
        config.card_precision_key: card_precision,
        f"{config.card_precision_key}_per_day": daily,
        "train_seconds": train_seconds,
    }


def capped_training(train: np.ndarray, labels: np.ndarray, keys: np.ndarray, max_rows: int) -> np.ndarray:
    """The rows of ``train`` production would train on under ``TRAINING_MAX_ROWS=max_rows``."""
    from .storage.training_data import capped_rates, sampled

    fraud = labels == 1
    population = train & sampled(keys, fraud)  # the training partition: guard rows never train
    frauds = int((fraud & population).sum())
    fraud_rate, genuine_rate = capped_rates(frauds, int(population.sum()) - frauds, max_rows)
    return population & sampled(keys, fraud, fraud_rate, genuine_rate)


def run_backtest(history: pd.DataFrame, features: pd.DataFrame, feature_names: Sequence[str],
                 params: TrainingParams, config: BacktestConfig, on_fold=None) -> list[dict[str, Any]]:
    """Every fold's result; ``features`` is :func:`compute_features` of ``history`` (same index).

    ``on_fold(result)`` is called after each fold, e.g. to print progress.
    """
    X = features[list(feature_names)].to_numpy(np.float64)
    days = day_numbers(history["timestamp"])
    # Integer codes: the per-fold rules group by customer many times.
    customers = pd.factorize(history["customer_id"].astype(str))[0]
    labels = pd.to_numeric(history["label"], errors="coerce").to_numpy(np.float64)
    keys = None
    if config.max_train_rows is not None:
        from .storage.schema import sample_key
        keys = np.fromiter((sample_key(str(t)) for t in history["transaction_id"]), np.int64, len(history))
    results = []
    for windows in config.windows():
        result = run_fold(windows, X, days, customers, labels, params, config, keys)
        results.append(result)
        if on_fold is not None:
            on_fold(result)
    return results


def summarize(results: Sequence[dict[str, Any]], keys: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and sample standard deviation (ddof=1) over folds, ignoring NaN; None where undefined."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for key in keys:
        values = np.array([r[key] for r in results], dtype=np.float64)
        values = values[~np.isnan(values)]
        mean[key] = float(values.mean()) if len(values) else None
        std[key] = float(values.std(ddof=1)) if len(values) > 1 else None
    return mean, std


def _iso(day: int) -> str:
    return (_EPOCH + timedelta(days=int(day))).isoformat()
