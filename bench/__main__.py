"""``make bench``: speed and memory of the service, printed as one table.

Sections (``--sections 1,2,3,4,5``):
  1. inference for one transaction: scikit-learn (as trained, n_jobs=1) vs the serving path
  2. the predict function in-process with a large SQLite history (1M transactions)
  3. sustained end to end through the dev host: HTTP → queue → persist → row in the DB
  4. retraining on 100k / 500k / 1M labeled transactions: wall time and peak RSS
  5. cold start: fresh process to first scored response

Every figure is a median / p99 over many repetitions, and the scikit-learn baseline is
measured in the same run so ratios hold on a noisy machine. ``--quick`` shrinks the
sizes for a smoke run. Results are also written as JSON (``--json``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.harness import Environment, Row, latency_stats, print_table

ROOT = Path(__file__).resolve().parents[1]


def section_inference(env: Environment, rows: list[Row], repeats: int) -> None:
    from shared.features import DEFAULT_SPEC

    model = env.trained_model()
    pipeline, compiled = model["pipeline"], model["serving"]
    sample = model["holdout"][DEFAULT_SPEC.names].to_numpy(np.float64)
    one = sample[:1]
    features = dict(zip(DEFAULT_SPEC.names, one[0]))

    forest = pipeline.steps[-1][1]
    forest.n_jobs = -1  # as trained
    as_trained = latency_stats(lambda: pipeline.predict_proba(one), max(50, repeats // 20))
    forest.n_jobs = 1
    single = latency_stats(lambda: pipeline.predict_proba(one), max(200, repeats // 5))
    serving = latency_stats(lambda: compiled.score(features), repeats)
    rows.append(Row("1 inference", "scikit-learn, n_jobs=-1 (as trained)", as_trained))
    rows.append(Row("1 inference", "scikit-learn, n_jobs=1", single))
    rows.append(Row("1 inference", "serving path (ONNX Runtime, dict → probability)", serving,
                    note=f"{single['median_us'] / serving['median_us']:.0f}× faster than n_jobs=1; "
                         f"target ≤ 50 µs and ≥ 50×"))


def section_predict_in_process(env: Environment, rows: list[Row], history_rows: int, repeats: int) -> None:
    import predict_function
    from harness.app import http_request

    app = env.app(history_rows=history_rows)
    requests_ = app.sample_requests(repeats)
    iterator = iter(requests_)

    def call() -> None:
        response = predict_function.main(http_request(next(iterator)))
        assert response.status_code == 200, response.get_body()

    call()  # load the model outside the measurement
    stats = latency_stats(call, repeats - 1)
    rows.append(Row("2 predict in-process", f"validate + features from {history_rows:,} rows (SQLite) + ONNX "
                    f"+ enqueue (Azurite)", stats, note="target median ≤ 3 ms, p99 ≤ 10 ms"))
    app.drain()


def section_end_to_end(env: Environment, rows: list[Row], seconds: float, clients: int, rate: float) -> None:
    result = env.end_to_end(seconds=seconds, clients=clients, rate=rate)
    rows.append(Row("3 end to end (dev host)", f"{clients} clients, {seconds:.0f} s: HTTP → queue → persist → DB",
                    result["accept_latency"],
                    note=f"{result['throughput']:.0f} tx/s accepted, {result['persisted']}/{result['accepted']} "
                         f"persisted, {result['lost']} lost, {result['errors']} errors; target ≥ 300 tx/s, "
                         f"p99 ≤ 50 ms"))


def section_retrain(env: Environment, rows: list[Row], sizes: list[int]) -> None:
    for size in sizes:
        result = env.retrain(size)
        rows.append(Row("4 retrain", f"{size:,} labeled transactions", None,
                        note=f"wall {result['seconds']:.0f} s, peak RSS {result['peak_rss_mb']:.0f} MB "
                             f"({result['status']}); target ≤ 300 s, ≤ 2048 MB"))


def section_cold_start(env: Environment, rows: list[Row], repeats: int) -> None:
    stats = env.cold_start(repeats)
    rows.append(Row("5 cold start", "new process: imports + model download + first scored response", stats,
                    note="target ≤ 2 s"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="1,2,3,4,5")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in about a minute")
    parser.add_argument("--json", default=str(ROOT / "bench-results" / "latest.json"))
    args = parser.parse_args(argv)
    sections = {int(s) for s in args.sections.split(",") if s}
    quick = args.quick

    rows: list[Row] = []
    started = time.time()
    with Environment(Path(tempfile.mkdtemp(prefix="bench-"))) as env:
        if 1 in sections:
            section_inference(env, rows, repeats=2000 if quick else 20000)
        if 2 in sections:
            section_predict_in_process(env, rows, history_rows=100_000 if quick else 1_000_000,
                                       repeats=500 if quick else 5000)
        if 3 in sections:
            section_end_to_end(env, rows, seconds=5 if quick else 30, clients=8, rate=0)
        if 4 in sections:
            section_retrain(env, rows, [20_000, 50_000] if quick else [100_000, 500_000, 1_000_000])
        if 5 in sections:
            section_cold_start(env, rows, repeats=3 if quick else 7)

    machine = f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"
    print_table(rows, title=f"Benchmarks ({machine}; {time.time() - started:.0f} s)")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine, "rows": [r.__dict__ for r in rows]}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
