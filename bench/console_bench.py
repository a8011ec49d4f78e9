"""The console's queries at scale: EXPLAIN plans and timings on SQLite and PostgreSQL.

    python -m bench.console_bench                 # 1M transactions, SQLite and PostgreSQL
    python -m bench.console_bench --rows 100000 --databases sqlite --repeats 3

Builds (once per size, cached in --workdir) a history of simulated transactions over 35 days
ending now, scored by a trained model with decisions and reasons, the older ones labeled, then
runs every monitoring query (shared/storage/monitoring.py) and the drift measurement through
the real stores and prints median / max per query with the plan's access path. Results go to
bench-results/console.json. Needs Azurite (started here) for the model store; PostgreSQL from
Debian's binaries (or TEST_POSTGRES_URL), skipped with a note when unavailable.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]


def explain(engine: sa.Engine, statement: Any) -> list[str]:
    """The plan of one statement, as the database prints it."""
    compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
        return [row[0] for row in conn.exec_driver_sql(f"EXPLAIN {compiled}")]


def timed(call: Any, repeats: int) -> dict[str, float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(samples), 1), "max_ms": round(max(samples), 1), "n": repeats}


def build(wiring: Any, rows: int, model: Any) -> dict[str, Any]:
    from harness.console import store_scored, traffic

    started = time.perf_counter()
    stored = store_scored(wiring, traffic(rows, 35, seed=12, prefix="cb-"), model, label_before=timedelta(days=7),
                          review_from=0.05)
    return {"rows": stored.rows, "labeled": stored.labeled, "reviews": stored.reviews,
            "seconds": round(time.perf_counter() - started, 1)}


def measure(wiring: Any, repeats: int) -> dict[str, Any]:
    from shared.storage import monitoring as m
    from shared.storage.engines import utcnow

    now = utcnow()
    queries = wiring.monitoring.queries
    engine = wiring.monitoring_engine
    hour, day = m.Window(now - timedelta(hours=1), now, 12), m.Window(now - timedelta(days=1), now, 24)
    week, month = now - timedelta(days=7), now - timedelta(days=30)
    total, sample = queries.sample(week, now, wiring.settings.drift_sample_rows)
    cut = int(min(1.0, wiring.settings.drift_sample_rows / max(total, 1)) * m.SAMPLE_KEY_RANGE) + 1
    cases = {
        "traffic, last hour": (lambda: queries.traffic(hour), m.traffic_statement(hour)),
        "traffic, last day": (lambda: queries.traffic(day), m.traffic_statement(day)),
        "review queue (newest 50, 7 days)": (lambda: queries.review_queue(week, 50),
                                             m.review_statement(week, 50)),
        "review queue by score (1 day)": (lambda: queries.review_queue(now - timedelta(days=1), 50, by_score=True),
                                          m.review_statement(now - timedelta(days=1), 50, by_score=True)),
        "outcomes (30 days, per version)": (lambda: queries.outcomes(month, now), m.outcomes_statement(month, now)),
        "drift sample: count (7 days)": (lambda: queries.sample(week, now, wiring.settings.drift_sample_rows),
                                         m.count_statement(week, now)),
        "drift sample: rows (7 days)": (None, m.sample_statement(week, now, cut, wiring.settings.drift_sample_rows)),
        "training runs (latest 60)": (lambda: queries.runs(60), m.runs_statement(60)),
    }
    results: dict[str, Any] = {}
    for name, (call, statement) in cases.items():
        entry: dict[str, Any] = {"plan": explain(engine, statement)}
        if call is not None:
            call()  # warm the page cache once, as a console that is used has it
            entry.update(timed(call, repeats))
        results[name] = entry
    # The whole drift measurement (sample, features of the sample recomputed in the database, PSI).
    wiring.monitoring.drift(cached=False)
    results["drift, end to end (sample + features + PSI)"] = timed(lambda: wiring.monitoring.drift(cached=False),
                                                                   max(1, repeats // 2))
    results["drift, end to end (sample + features + PSI)"]["sample_rows"] = len(sample)
    # The snapshot the page renders (parts in parallel).
    wiring.monitoring.snapshot("day")
    results["snapshot (whole page data), day"] = timed(lambda: wiring.monitoring.snapshot("day"), repeats)
    return results


def run(database: str, url: str, rows: int, repeats: int, azurite: Any, model_factory: Any) -> dict[str, Any]:
    from harness.app import configure_app

    wiring = configure_app(None, azurite.connection_string, url, suffix=uuid.uuid4().hex[:8])
    model_factory.publish(wiring.store, report=True)
    model = wiring.store.load(wiring.store.current_version())
    with wiring.engine.connect() as conn:
        present = conn.execute(sa.text("SELECT count(*) FROM transactions")).scalar_one()
    built = {"rows": present, "reused": True} if present >= rows else build(wiring, rows - present, model)
    if wiring.engine.dialect.name == "postgresql":
        with wiring.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    print(f"{database}: {built}", flush=True)
    return {"database": database, "built": built, "queries": measure(wiring, repeats)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--workdir", default=str(ROOT / ".local" / "console-bench"))
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "console.json"))
    args = parser.parse_args(argv)

    from harness.app import ModelFactory
    from harness.servers import ServiceUnavailable, start_azurite, start_postgres

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    azurite = start_azurite(workdir / f"azurite-{uuid.uuid4().hex[:6]}")
    results = []
    postgres = None
    try:
        factory = ModelFactory()
        for database in args.databases.split(","):
            if database == "sqlite":
                path = workdir / f"console-{args.rows}.db"
                for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                    stale.unlink(missing_ok=True)  # its rows were scored by a model of an earlier run
                url = f"sqlite:///{path}"
            else:
                url = os.environ.get("TEST_POSTGRES_URL", "")
                if not url:
                    try:
                        postgres = start_postgres()
                    except ServiceUnavailable as exc:
                        print(f"postgresql skipped: {exc}")
                        continue
                    url = postgres.url
            results.append(run(database, url, args.rows, args.repeats, azurite, factory))
    finally:
        azurite.stop()
        if postgres is not None:
            postgres.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": args.rows, "results": results}, indent=2))
    for result in results:
        print(f"\n{result['database']}, {result['built']['rows']:,} transactions")
        print("| query | median | max | plan |")
        print("|---|---|---|---|")
        for name, entry in result["queries"].items():
            plan = "; ".join(line.strip() for line in entry.get("plan", []))[:160]
            print(f"| {name} | {entry.get('median_ms', '–')} ms | {entry.get('max_ms', '–')} ms | {plan} |")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
