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

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from .features import BASELINE_FEATURES, FEATURE_NAMES, FeatureSpec, compute_features
from .training import TrainingError, TrainingParams, fit_pipeline

DEFAULT_TOP_K = 100
# The handbook's features: everything but the ratio to the card's 30-day mean, which this project added.
HANDBOOK_FEATURES = [name for name in FEATURE_NAMES if not name.startswith("amount_to_customer_mean_")]
FEATURE_SETS: dict[str, list[str]] = {
    "full": list(FEATURE_NAMES),
    "baseline": list(BASELINE_FEATURES),
    "handbook": HANDBOOK_FEATURES,
}

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


def known_compromised(day: np.ndarray, customer: Sequence[Any], label: np.ndarray,
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
             labels: np.ndarray, params: TrainingParams, config: BacktestConfig) -> dict[str, Any]:
    """Train and score one fold. ``X`` holds the chosen features of every row of the history."""
    labeled = ~np.isnan(labels)
    train_start, train_end = day_number(windows.train_start), day_number(windows.train_end)
    test_start, test_end = day_number(windows.test_start), day_number(windows.test_end)
    train = labeled & (days >= train_start) & (days < train_end)
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
    results = []
    for windows in config.windows():
        result = run_fold(windows, X, days, customers, labels, params, config)
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


# --- command line ---------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m shared.cli backtest``. Model options left out keep TrainingParams' defaults."""
    defaults = TrainingParams()
    parser.add_argument("--data", required=True, help="labeled CSV (transaction_id,timestamp,customer_id,"
                                                      "terminal_id,amount,label)")
    parser.add_argument("--train-start", required=True, type=_iso_date,
                        help="first training day of fold 0, YYYY-MM-DD (UTC)")
    parser.add_argument("--train-days", type=_positive_int, default=7, help="days per training window (default 7)")
    parser.add_argument("--delay-days", type=_non_negative_int, default=7,
                        help="label delay: days skipped between training and test; also the "
                             "terminal features' delay (default 7)")
    parser.add_argument("--test-days", type=_positive_int, default=7, help="days per test window (default 7)")
    parser.add_argument("--folds", type=_positive_int, default=1, help="default 1")
    parser.add_argument("--step-days", type=_positive_int, default=7,
                        help="fold k starts k*step days before --train-start (default 7)")
    parser.add_argument("--top-k", type=_positive_int, default=DEFAULT_TOP_K, help="k of card precision@k")
    parser.add_argument("--features", default="full",
                        help=f"{'|'.join(FEATURE_SETS)} or a comma-separated list of feature names")
    model = parser.add_argument_group("model (defaults: TrainingParams)")
    # SUPPRESS: an option not given stays absent, so TrainingParams' default applies.
    model.add_argument("--smote-ratio", type=_optional(_share), default=argparse.SUPPRESS,
                       help=f"minority/majority after SMOTE, or none (default {defaults.smote_ratio})")
    model.add_argument("--no-smote", dest="smote_ratio", action="store_const", const=None,
                       default=argparse.SUPPRESS, help="same as --smote-ratio none")
    model.add_argument("--class-weight", type=_optional(str), choices=[None, "balanced", "balanced_subsample"],
                       default=argparse.SUPPRESS, metavar="{none,balanced,balanced_subsample}",
                       help=f"default {defaults.class_weight}")
    model.add_argument("--n-estimators", type=_positive_int, default=argparse.SUPPRESS,
                       help=f"default {defaults.n_estimators}")
    model.add_argument("--max-depth", type=_optional(_positive_int), default=argparse.SUPPRESS,
                       help=f"int or none (default {defaults.max_depth})")
    model.add_argument("--max-samples", type=_optional(_share), default=argparse.SUPPRESS,
                       help=f"share of rows per tree, or none (default {defaults.max_samples})")
    model.add_argument("--min-samples-leaf", type=_positive_int, default=argparse.SUPPRESS,
                       help=f"default {defaults.min_samples_leaf}")
    model.add_argument("--n-jobs", type=int, default=argparse.SUPPRESS, help=f"default {defaults.n_jobs}")
    model.add_argument("--seed", type=int, default=argparse.SUPPRESS,
                       help=f"random_state of SMOTE and the forest (default {defaults.random_state})")


_PARAM_OPTIONS = {
    "smote_ratio": "smote_ratio", "class_weight": "class_weight", "n_estimators": "n_estimators",
    "max_depth": "max_depth", "max_samples": "max_samples", "min_samples_leaf": "min_samples_leaf",
    "n_jobs": "n_jobs", "seed": "random_state",
}


def params_from_args(args: argparse.Namespace) -> TrainingParams:
    """TrainingParams' defaults overridden by the model options that were given."""
    overrides = {field: getattr(args, option) for option, field in _PARAM_OPTIONS.items() if hasattr(args, option)}
    return replace(TrainingParams(), **overrides)


def resolve_features(choice: str) -> list[str]:
    """A named feature set or a comma-separated list of FEATURE_NAMES."""
    if choice in FEATURE_SETS:
        return list(FEATURE_SETS[choice])
    names = [name.strip() for name in choice.split(",") if name.strip()]
    unknown = [name for name in names if name not in FEATURE_NAMES]
    if not names or unknown:
        raise BacktestDataError(f"unknown features {unknown or choice!r}; use {'|'.join(FEATURE_SETS)} "
                                f"or names from {', '.join(FEATURE_NAMES)}")
    return names


def main(args: argparse.Namespace) -> int:
    """Run the backtest the options describe; the last line printed is the JSON summary."""
    from .services import read_transactions_csv

    started = time.perf_counter()
    config = BacktestConfig(train_start=args.train_start, folds=args.folds, train_days=args.train_days,
                            delay_days=args.delay_days, test_days=args.test_days, step_days=args.step_days,
                            top_k=args.top_k)
    params = params_from_args(args)
    # The terminal features must not use labels the assumed delay has not delivered yet.
    spec = FeatureSpec(delay_days=config.delay_days)
    try:
        feature_names = resolve_features(args.features)
        history = read_transactions_csv(args.data)
        warnings = check_coverage(day_numbers(history["timestamp"]), config, spec.history_days)
    except (BacktestDataError, ValueError, OSError) as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    loaded = time.perf_counter()
    features = compute_features(history, spec)
    featured = time.perf_counter()

    cp_key = config.card_precision_key
    print(f"backtest of {args.data}: {len(history):,} transactions, {history['label'].eq(1).mean():.3%} fraud; "
          f"features {args.features} ({len(feature_names)}) in {featured - loaded:.1f}s")
    print(f"model: {_describe(params)}")
    header = (f"{'fold':>4}  {'train days':<23}  {'test days':<23}  {'train rows':>10}  {'frauds':>6}  "
              f"{'test rows':>9}  {'frauds':>6}  {'removed':>7}  {'AUC ROC':>7}  {'AP':>6}  "
              f"{'CP@' + str(config.top_k):>6}  {'train s':>7}")
    print(header)
    print("-" * len(header))

    def print_fold(r: dict[str, Any]) -> None:
        print(f"{r['fold']:>4}  {'..'.join(r['train']):<23}  {'..'.join(r['test']):<23}  {r['train_rows']:>10,}  "
              f"{r['train_frauds']:>6,}  {r['test_rows']:>9,}  {r['test_frauds']:>6,}  "
              f"{r['removed_known_compromised_rows']:>7,}  {_fmt(r['auc_roc'], 7)}  {_fmt(r['average_precision'], 6)}  "
              f"{_fmt(r[cp_key], 6)}  {r['train_seconds']:>7.1f}", flush=True)

    try:
        results = run_backtest(history, features, feature_names, params, config, on_fold=print_fold)
    except TrainingError as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return 1
    keys = ["auc_roc", "average_precision", cp_key, "train_seconds"]
    mean, std = summarize(results, keys)
    print("-" * len(header))
    print("mean ± std: " + "  ".join(
        f"{label} {_fmt(mean[key])} ± {_fmt(std[key])}"
        for label, key in (("AUC ROC", "auc_roc"), ("AP", "average_precision"), (f"CP@{config.top_k}", cp_key),
                           ("train s", "train_seconds"))))
    elapsed = time.perf_counter() - started
    print(f"total {elapsed:.1f}s (read {loaded - started:.1f}s, features {featured - loaded:.1f}s)")
    summary = {
        "folds": results,
        "mean": mean,
        "std": std,
        "config": {
            "data": str(args.data),
            "rows": int(len(history)),
            "train_start": config.train_start.isoformat(),
            "train_days": config.train_days,
            "delay_days": config.delay_days,
            "test_days": config.test_days,
            "folds": config.folds,
            "step_days": config.step_days,
            "top_k": config.top_k,
            "feature_set": args.features,
            "features": feature_names,
            "params": params.to_dict(),
        },
        "timing": {"read_seconds": loaded - started, "feature_seconds": featured - loaded,
                   "total_seconds": elapsed},
    }
    print(json.dumps(_json_safe(summary), separators=(",", ":")))
    return 0


# --- helpers --------------------------------------------------------------------------


def _iso(day: int) -> str:
    return (_EPOCH + timedelta(days=int(day))).isoformat()


def _fmt(value: float | None, width: int = 0) -> str:
    text = "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
    return f"{text:>{width}}"


def _describe(params: TrainingParams) -> str:
    smote = "no SMOTE" if params.smote_ratio is None else f"SMOTE {params.smote_ratio}"
    return (f"{smote}, class_weight {params.class_weight}, {params.n_estimators} trees, "
            f"max_depth {params.max_depth}, max_samples {params.max_samples}, "
            f"min_samples_leaf {params.min_samples_leaf}, seed {params.random_state}")


def _json_safe(value: Any) -> Any:
    """NaN is not JSON: write null instead."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1]: {text}")
    return value


def _optional(convert):
    """``convert``, or None for the word ``none``."""
    def parse(text: str):
        return None if text.strip().lower() == "none" else convert(text)
    parse.__name__ = getattr(convert, "__name__", "value")
    return parse
