"""Machinery of the benchmarks: the services (harness.servers), apps on generated histories
(harness.app, bench.datasets), child processes measured by the kernel, and the printed tables.

Statistics come from harness.stats (median, nearest-rank p99, in microseconds).
"""
from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from devhost.azurite import free_port
from harness.app import ModelFactory, app_settings, configure_app, hosted_settings
from harness.hosting import HostProcess
from harness.servers import Postgres, start_azurite, start_postgres
from harness.stats import summary, time_calls
from shared.cli import ensure_resources
from shared.config import Settings
from shared.wiring import Wiring

from . import datasets
from .clients import Record, client_loop, payload, run_clients

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["Environment", "BenchApp", "Row", "print_table", "markdown_table", "time_calls", "summary", "payload"]


# --- the printed tables -----------------------------------------------------------------------


@dataclass
class Row:
    section: str
    what: str
    stats: dict[str, Any] | None
    note: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


def fmt_us(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} s"
    if value >= 1e3:
        return f"{value / 1e3:.2f} ms"
    return f"{value:.1f} µs"


def markdown_table(header: tuple[str, ...], lines: list[tuple[str, ...]]) -> str:
    table = [header, *lines]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    out = []
    for index, line in enumerate(table):
        out.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) + " |")
        if index == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def print_table(rows: list[Row], title: str) -> None:
    header = ("section", "measure", "median", "p99", "n", "notes")
    lines = [(r.section, r.what, fmt_us(r.stats["median_us"]) if r.stats else "-",
              fmt_us(r.stats["p99_us"]) if r.stats else "-", f"{r.stats['n']:,}" if r.stats else "-", r.note)
             for r in rows]
    print(f"\n{title}\n")
    print(markdown_table(header, lines))


# --- processes measured by the kernel -----------------------------------------------------------


def run_child(args: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[int, float, float, str]:
    """Run ``python args…`` and wait for it with wait4(2): (exit code, wall seconds, peak RSS
    in MiB as the kernel accounted it for that child, its stdout). The figure is the child's
    own ``ru_maxrss`` (what ``/usr/bin/time -v`` reports), not this process's."""
    started = time.perf_counter()
    with open(log, "w") as err, open(log.with_suffix(".out"), "w+") as out:
        child = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid == child.pid:
                break
            if time.monotonic() > deadline:
                child.kill()
                pid, status, usage = os.wait4(child.pid, 0)
                break
            time.sleep(0.05)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        return child.returncode, seconds, usage.ru_maxrss / 1024, out.read()


# --- the environment ----------------------------------------------------------------------------


class Environment:
    """Azurite (and PostgreSQL when a section needs it), one production-configuration model,
    and the temporary folder of a run."""

    def __init__(self, workdir: Path, quick: bool):
        self.workdir = workdir
        self.quick = quick
        self.azurite = start_azurite(workdir / "azurite")
        self._factory: ModelFactory | None = None
        self._postgres: Postgres | None = None
        self.loads: list[dict[str, Any]] = []  # how each generated history was loaded

    def close(self) -> None:
        if self._postgres is not None:
            self._postgres.stop()
        self.azurite.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def factory(self) -> ModelFactory:
        """The production configuration (TrainingParams defaults) trained on 100k simulated
        transactions (30k with --quick)."""
        if self._factory is None:
            from shared.training import TrainingParams

            self._factory = ModelFactory(rows=30_000 if self.quick else 100_000, seed=3, days=90,
                                         params=TrainingParams())
        return self._factory

    def postgres(self) -> Postgres:
        if self._postgres is None:
            self._postgres = start_postgres()
        return self._postgres

    def sqlite_history(self, request: datasets.Request) -> Path:
        path, report = datasets.sqlite_history(request, progress=True)
        if not any(load["path"] == report.path for load in self.loads):
            self.loads.append({"backend": "sqlite", "request": request.__dict__, **report.to_dict()})
        return path

    def scratch_copy(self, request: datasets.Request) -> Path:
        """A copy of ``request``'s SQLite history in this run's folder, to write into."""
        source = self.sqlite_history(request)
        target = self.workdir / source.name
        if not target.exists():
            shutil.copyfile(source, target)
        return target

    def postgres_history(self, request: datasets.Request) -> str:
        """A database of the (throw-away) PostgreSQL cluster holding ``request``, loaded now."""
        import sqlalchemy as sa

        from shared.storage.engines import create_db_engine

        server = self.postgres()
        name = f"h{request.rows}"
        admin = create_db_engine(server.url)
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if not exists:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
        admin.dispose()
        url = server.url.rsplit("/", 1)[0] + f"/{name}"
        if not exists:
            engine = create_db_engine(url)
            try:
                report = datasets.load(engine, request, progress=True)
            finally:
                engine.dispose()
            self.loads.append({"backend": "postgresql", "request": request.__dict__, **report.to_dict()})
        return url

    def app(self, database_url: str, **extra: str) -> BenchApp:
        return BenchApp(self, database_url, **extra)


class BenchApp:
    """An app on one database: its own queue and container, the bench model promoted."""

    def __init__(self, env: Environment, database_url: str, **extra: str):
        self.env = env
        self.suffix = uuid.uuid4().hex[:8]
        self.database_url = database_url
        self.extra = {"MODEL_REFRESH_SECONDS": "60", "RETRAIN_SCHEDULE": "0 0 0 1 1 *", **extra}
        self.values = app_settings(env.azurite.connection_string, database_url, self.suffix, **self.extra)
        self.wiring = self.activate()
        self.version = env.factory().publish(self.wiring.store)

    def activate(self) -> Any:
        """Point the process-wide wiring (what predict_function uses) at this app."""
        self.wiring = configure_app(None, self.env.azurite.connection_string, self.database_url, self.suffix,
                                    **self.extra)
        return self.wiring

    def hosted_values(self, **extra: str) -> dict[str, str]:
        """Settings of the same app served by the dev host as its own process."""
        return hosted_settings(self.env.azurite.connection_string, self.database_url, self.suffix,
                               MODEL_REFRESH_SECONDS="60", **extra)

    def sample_customers(self, count: int, seed: int = 5) -> list[tuple[str, str, float]]:
        """(customer, one of the customer's terminals, an amount) of ordinary stored transactions."""
        import sqlalchemy as sa

        from shared.storage.schema import transactions

        t = transactions.c
        with self.wiring.engine.connect() as conn:
            high = conn.execute(sa.select(sa.func.max(t.id))).scalar_one()
            rng = random.Random(seed)
            picks = sorted(rng.randrange(1, high + 1) for _ in range(count * 2))
            rows = conn.execute(sa.select(t.customer_id, t.terminal_id, t.amount).where(
                t.id.in_(picks), t.terminal_id != datasets.HOT_TERMINAL)).all()
        return [(r[0], r[1], float(r[2])) for r in rows][:count]

    def drain(self) -> None:
        self.wiring.queue.client.clear_messages()


# --- sections that run the dev host ---------------------------------------------------------------


def hot_terminal_load(app: BenchApp, seconds: float, clients: int, before: float, after: float,
                      workdir: Path) -> dict[str, Any]:
    """``clients`` clients pay at the hot terminal for ``seconds`` through the dev host while
    one ordinary-customer client measures its latency and degraded answers, from ``before``
    seconds before the load to ``after`` seconds after it."""
    values = app.hosted_values()
    customers = app.sample_customers(500)
    with HostProcess(values, free_port(), workdir / f"devhost-hot-{app.suffix}.log") as host:
        url = f"{host.base_url}/api/predict"
        requests.post(url, json=payload(f"warm-{app.suffix}", *customers[0], random.Random(1)), timeout=30)
        stop = threading.Event()
        records: list[Record] = []
        rng = random.Random(13)

        def ordinary(n: int) -> dict[str, Any]:
            customer, terminal, amount = customers[n % len(customers)]
            return payload(f"ord-{app.suffix}-{n}", customer, terminal, amount * rng.uniform(0.5, 1.5), rng)

        # A steady customer stream (20 ms between answers and the next request), not a hammer.
        measurer = threading.Thread(target=client_loop, args=(url, ordinary, stop.is_set, records.append, 0.02))
        measurer.start()
        time.sleep(before)
        code, wall, _, out = run_child(
            ["-m", "bench.hot_clients_job", url, str(seconds), str(clients), f"hot-{app.suffix}"],
            dict(os.environ), workdir / f"hot-clients-{app.suffix}.log", timeout=seconds + 120)
        time.sleep(after)
        stop.set()
        measurer.join()
    if code != 0:
        raise RuntimeError(f"hot clients failed: {out[-2000:]}")
    hot = json.loads(out.strip().splitlines()[-1])
    hot["latency"] = summary(hot.pop("latency_seconds"))
    load_started, load_stopped = hot["started"], hot["stopped"]  # wall clock, as the records

    def part(start: float, end: float) -> dict[str, Any]:
        chosen = [r for r in records if start <= r[0] < end]
        ok = [r for r in chosen if r[2] == "200"]
        return {"latency": summary(r[1] for r in ok), "requests": len(chosen), "ok": len(ok),
                "degraded": sum(r[3] for r in ok), "errors": len(chosen) - len(ok),
                "degraded_share": (sum(r[3] for r in ok) / len(ok)) if ok else 0.0}

    degraded_after = [r[0] for r in records if r[3] and r[0] >= load_stopped]
    return {
        "hot": hot,
        "load_seconds": round(load_stopped - load_started, 1),
        "ordinary_before": part(0, load_started),
        "ordinary_during": part(load_started, load_stopped),
        "ordinary_after": part(load_stopped, float("inf")),
        "degraded_persisted_seconds": round(max(degraded_after) - load_stopped, 2) if degraded_after else 0.0,
    }


def end_to_end(app: BenchApp, seconds: float, clients: int, workdir: Path) -> dict[str, Any]:
    """``clients`` clients for ``seconds`` through the dev host; waits (bounded) until persist
    stored everything accepted."""
    from harness.faults import stored_counts

    values = app.hosted_values(TRANSACTIONS_QUEUE=f"e2e-{app.suffix}")
    customers = app.sample_customers(2000, seed=9)
    prefix = f"e2e-{app.suffix}"
    with HostProcess(values, free_port(), workdir / f"devhost-e2e-{app.suffix}.log",
                     extra_args=("--max-polling-interval", "0.5")) as host:
        url = f"{host.base_url}/api/predict"
        requests.post(url, json=payload(f"{prefix}-warm", *customers[0], random.Random(1)), timeout=30)
        accepted: list[str] = []
        latencies: list[float] = []
        errors = [0]
        lock = threading.Lock()
        deadline = time.monotonic() + seconds

        def client(index: int) -> None:
            rng = random.Random(index)
            last: list[str] = [""]  # the id of the request in flight (one at a time per client)

            def body(n: int) -> dict[str, Any]:
                customer, terminal, amount = customers[rng.randrange(len(customers))]
                last[0] = f"{prefix}-{index}-{n}"
                return payload(last[0], customer, terminal, amount * rng.uniform(0.5, 1.5), rng)

            def record(result: Record) -> None:
                with lock:
                    if result[2] == "200":
                        accepted.append(last[0])
                        latencies.append(result[1])
                    else:
                        errors[0] += 1

            client_loop(url, body, lambda: time.monotonic() >= deadline, record)

        elapsed = run_clients(client, clients)
        wanted = set(accepted)
        stored: set[str] = set()
        wait_until = time.monotonic() + 180
        while time.monotonic() < wait_until:
            stored = set(stored_counts(app.database_url, wanted))
            if wanted <= stored:
                break
            time.sleep(0.5)
    return {"throughput": len(latencies) / elapsed, "accepted": len(wanted), "persisted": len(wanted & stored),
            "lost": len(wanted - stored), "errors": errors[0], "accept_latency": summary(latencies)}


# --- retraining in a child process ------------------------------------------------------------------


def retrain(env: Environment, database_url: str, label: str, timeout: float = 3600) -> dict[str, Any]:
    """One forced retrain of a fresh app on ``database_url`` in a child process
    (bench/retrain_job.py): wall time, the kernel's peak RSS of that child, and the run."""
    suffix = uuid.uuid4().hex[:8]
    values = app_settings(env.azurite.connection_string, database_url, f"rt{suffix}")
    wiring = Wiring(Settings.from_env(values))
    try:
        ensure_resources(wiring)  # its container and queues; no champion: a first training
    finally:
        wiring.close()
    code, wall, peak_mib, out = run_child(["-m", "bench.retrain_job"], {**os.environ, **values},
                                          env.workdir / f"retrain-{label}-{suffix}.log", timeout)
    if code != 0:
        log = (env.workdir / f"retrain-{label}-{suffix}.log").read_text()[-3000:]
        raise RuntimeError(f"retrain job ({label}) exited {code}: {log}")
    result = json.loads(out.strip().splitlines()[-1])
    details = result.get("details") or {}
    query = details.get("feature_query") or {}
    population = (details.get("sampling") or {}).get("population") or {}
    return {
        "label": label, "wall_seconds": round(wall, 1), "run_seconds": details.get("seconds"),
        "peak_rss_mib": round(peak_mib), "status": result["status"], "reason": result.get("reason"),
        "training_rows": result.get("training_rows"), "sample_rows": query.get("rows"),
        "feature_query_seconds": query.get("seconds"),
        "feature_query_rows_per_second": round(query["rows"] / query["seconds"]) if query.get("seconds") else None,
        "population": population.get("frauds", 0) + population.get("genuine", 0),
        "population_frauds": population.get("frauds"),
        "phases": result.get("phases"),
        "read_done_at": result.get("read_done_at"),
    }


def cold_start(app: BenchApp, repeats: int) -> dict[str, Any]:
    env = {**os.environ, **app.values}
    customers = app.sample_customers(repeats, seed=17)
    rng = random.Random(3)
    samples = []
    for n in range(repeats):
        body = json.dumps(payload(f"cold-{app.suffix}-{n}", *customers[n % len(customers)], rng))
        start = time.perf_counter()
        child = subprocess.run([sys.executable, "-m", "bench.cold_start_job", body], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=120)
        samples.append(time.perf_counter() - start)
        if child.returncode != 0 or '"status": 200' not in child.stdout:
            raise RuntimeError(f"cold start failed: {child.stdout[-500:]} {child.stderr[-2000:]}")
    app.drain()
    stats = summary(samples)
    stats["p99_us"] = stats["max_us"]  # few repetitions: the max stands for the tail
    return stats


def self_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
