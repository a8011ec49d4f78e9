"""Cost of reason codes for one transaction (shared/explain.py), against the baselines.

    .venv/bin/python bench/explain_bench.py [--repeats 5000]

Trains the production configuration (TrainingParams defaults: 100 trees, depth 12) on
100k simulated transactions, then times, for one row at a time cycling over the 200
holdout rows the model scores highest (the reviewed/declined ones):

* scikit-learn ``predict_proba`` with ``n_jobs=1`` (the baseline, measured in this run);
* the serving path's ONNX score (what predict pays today);
* ``ForestExplainer.explain_features`` (the added cost), and with ``top_reasons(k=3)``.

Prints median and p99 in microseconds.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.stats import time_calls

ROOT = Path(__file__).resolve().parents[1]


def _latency(call: Callable[[int], Any], repeats: int) -> tuple[float, float]:
    """Median and p99 of ``repeats`` calls, in microseconds; ``call`` gets the repetition index."""
    stats = time_calls(call, repeats)
    return stats["median_us"], stats["p99_us"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5000)
    args = parser.parse_args()

    from shared.compiled import OnnxScorer, compile_pipeline
    from shared.explain import ForestExplainer
    from shared.features import DEFAULT_SPEC, compute_features
    from shared.simulator import simulate_for_volume
    from shared.training import TrainingParams, fit_pipeline

    names = DEFAULT_SPEC.names
    history = simulate_for_volume(100_000, seed=3, n_days=90)
    X = compute_features(history)[names].to_numpy(np.float64)
    y = history["label"].to_numpy()
    n_train = int(len(X) * 0.6)  # oldest 60 %, as training does; time it on the newest 20 %
    params = TrainingParams()
    pipeline = fit_pipeline(X[:n_train], y[:n_train], params)
    forest = pipeline.steps[-1][1]
    forest.set_params(n_jobs=1)

    holdout = X[int(len(X) * 0.8):]
    risky = holdout[np.argsort(-forest.predict_proba(holdout)[:, 1])[:200]]
    feature_dicts = [dict(zip(names, row.tolist())) for row in risky]
    onnx = OnnxScorer(compile_pipeline(pipeline, len(names)))

    start = time.perf_counter()
    explainer = ForestExplainer.from_model(pipeline, names)
    build_ms = (time.perf_counter() - start) * 1e3
    saved = explainer.to_bytes()
    start = time.perf_counter()
    ForestExplainer.from_bytes(saved)
    load_ms = (time.perf_counter() - start) * 1e3

    n = len(risky)
    rows = [
        ("scikit-learn predict_proba, n_jobs=1 (baseline)", lambda i: forest.predict_proba(risky[i % n: i % n + 1])),
        ("ONNX score (serving path today)", lambda i: onnx(risky[i % n: i % n + 1])),
        ("explain one row (explain_features)", lambda i: explainer.explain_features(feature_dicts[i % n])),
        ("explain + top_reasons(k=3)", lambda i: explainer.explain_features(feature_dicts[i % n]).reasons(3)),
    ]
    print(f"model: {params.n_estimators} trees, max_depth {params.max_depth}, "
          f"{len(explainer.delta) - 1:,} nodes; explainer built in {build_ms:.0f} ms, "
          f"{len(saved) / 1e6:.1f} MB saved, loaded in {load_ms:.1f} ms; {args.repeats} repetitions each")
    results = []
    for label, call in rows:
        call(0)  # warm-up
        results.append((label, *_latency(call, args.repeats)))
    width = max(len(label) for label, *_ in results)
    print(f"{'measure'.ljust(width)}  {'median µs':>10}  {'p99 µs':>10}")
    for label, median, p99 in results:
        print(f"{label.ljust(width)}  {median:10.1f}  {p99:10.1f}")
    baseline = results[0][1]
    print(f"explain + reasons: {results[3][1]:.1f} µs median, {baseline / results[3][1]:.0f}× faster than "
          f"the scikit-learn baseline; budget 1,000 µs added to predict's median")


if __name__ == "__main__":
    main()
