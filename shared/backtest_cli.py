"""``python -m shared.cli backtest``: the command line of the out-of-time backtest
(protocol in :mod:`shared.backtest`)."""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from datetime import date
from typing import Any

from .backtest import (
    ABLATION_SPEC,
    DEFAULT_TOP_K,
    FEATURE_SETS,
    BacktestConfig,
    BacktestDataError,
    check_coverage,
    day_numbers,
    run_backtest,
    summarize,
)
from .features import DEFAULT_SPEC, FeatureSpec, compute_features
from .training import TrainingError, TrainingParams


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
    parser.add_argument("--max-train-rows", type=_positive_int, default=None,
                        help="train as a retrain capped at TRAINING_MAX_ROWS does: the guard partition left "
                             "out, genuine rows sampled by the hash of their id (default: every labeled row)")
    parser.add_argument("--features", default="full",
                        help=f"{'|'.join(FEATURE_SETS)} or a comma-separated list of feature names")
    parser.add_argument("--spec", type=_spec_overrides, default={}, metavar="JSON",
                        help='FeatureSpec settings to compute the features with, e.g. '
                             '\'{"customer_habit_days": [30, 14]}\' (default: the ones the named set implies)')
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
    model.add_argument("--max-features", type=_max_features, default=argparse.SUPPRESS,
                       help=f"features tried per split: sqrt, log2, a share in (0, 1] or none for all "
                            f"(default {defaults.max_features})")
    model.add_argument("--n-jobs", type=int, default=argparse.SUPPRESS, help=f"default {defaults.n_jobs}")
    model.add_argument("--seed", type=int, default=argparse.SUPPRESS,
                       help=f"random_state of SMOTE and the forest (default {defaults.random_state})")


_PARAM_OPTIONS = {
    "smote_ratio": "smote_ratio", "class_weight": "class_weight", "n_estimators": "n_estimators",
    "max_depth": "max_depth", "max_samples": "max_samples", "min_samples_leaf": "min_samples_leaf",
    "max_features": "max_features",
    "n_jobs": "n_jobs", "seed": "random_state",
}


def params_from_args(args: argparse.Namespace) -> TrainingParams:
    """TrainingParams' defaults overridden by the model options that were given."""
    overrides = {field: getattr(args, option) for option, field in _PARAM_OPTIONS.items() if hasattr(args, option)}
    return replace(TrainingParams(), **overrides)


def resolve_features(choice: str, spec: FeatureSpec | None = None) -> list[str]:
    """A named feature set or a comma-separated list of names ``spec`` (default: every
    feature the backtest knows, ABLATION_SPEC) computes."""
    known = (spec or ABLATION_SPEC).names
    if choice in FEATURE_SETS:
        names = list(FEATURE_SETS[choice])
    else:
        names = [name.strip() for name in choice.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if not names or unknown:
        raise BacktestDataError(f"unknown features {unknown or choice!r}; use {'|'.join(FEATURE_SETS)} "
                                f"or names from {', '.join(known)}")
    return names


def feature_spec(names: list[str], delay_days: int, overrides: dict[str, Any] | None = None) -> FeatureSpec:
    """The spec the backtest computes: DEFAULT_SPEC when it has every name asked for, else
    ABLATION_SPEC; with the backtest's label delay and the ``--spec`` settings."""
    base = DEFAULT_SPEC if set(names) <= set(DEFAULT_SPEC.names) else ABLATION_SPEC
    return FeatureSpec.from_dict({**base.to_dict(), "delay_days": delay_days, **(overrides or {})})


def main(args: argparse.Namespace) -> int:
    """Run the backtest the options describe; the last line printed is the JSON summary."""
    from .operations import read_transactions_csv

    started = time.perf_counter()
    config = BacktestConfig(train_start=args.train_start, folds=args.folds, train_days=args.train_days,
                            delay_days=args.delay_days, test_days=args.test_days, step_days=args.step_days,
                            top_k=args.top_k, max_train_rows=args.max_train_rows)
    params = params_from_args(args)
    try:
        # The terminal features must not use labels the assumed delay has not delivered yet.
        spec = feature_spec(resolve_features(args.features), config.delay_days, args.spec)
        feature_names = resolve_features(args.features, spec)
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
            "max_train_rows": config.max_train_rows,
            "top_k": config.top_k,
            "feature_set": args.features,
            "features": feature_names,
            "feature_spec": spec.to_dict(),
            "params": params.to_dict(),
        },
        "timing": {"read_seconds": loaded - started, "feature_seconds": featured - loaded,
                   "total_seconds": elapsed},
    }
    print(json.dumps(_json_safe(summary), separators=(",", ":")))
    return 0


# --- helpers --------------------------------------------------------------------------


def _fmt(value: float | None, width: int = 0) -> str:
    text = "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
    return f"{text:>{width}}"


def _describe(params: TrainingParams) -> str:
    smote = "no SMOTE" if params.smote_ratio is None else f"SMOTE {params.smote_ratio}"
    return (f"{smote}, class_weight {params.class_weight}, {params.n_estimators} trees, "
            f"max_depth {params.max_depth}, max_samples {params.max_samples}, "
            f"min_samples_leaf {params.min_samples_leaf}, max_features {params.max_features}, "
            f"seed {params.random_state}")


def _json_safe(value: Any) -> Any:
    """NaN is not JSON: write null instead."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _spec_overrides(text: str) -> dict[str, Any]:
    try:
        overrides = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--spec is not JSON: {exc}") from exc
    if not isinstance(overrides, dict):
        raise argparse.ArgumentTypeError("--spec needs a JSON object of FeatureSpec settings")
    return overrides


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


def _max_features(text: str) -> str | float | None:
    word = text.strip().lower()
    if word in ("sqrt", "log2"):
        return word
    return _optional(_share)(text)


def _optional(convert):
    """``convert``, or None for the word ``none``."""
    def parse(text: str):
        return None if text.strip().lower() == "none" else convert(text)
    parse.__name__ = getattr(convert, "__name__", "value")
    return parse
