#!/usr/bin/env python3
"""Fault run: transactions through the dev host while storage restarts and the database goes away.

    .venv/bin/python scripts/fault_run.py                      # 10,000 transactions, DB down 30 s
    .venv/bin/python scripts/fault_run.py --transactions 2000 --db-outage 10 --json out.json

Everything runs on this machine, on 127.0.0.1 only: a fresh Azurite (free ports, temporary
folder), a throw-away PostgreSQL cluster (Debian's binaries, as in the tests), a small model
trained on simulated history and published, and the function app served by the dev host as
its own process. Clients send every transaction to POST /api/predict and retry a 503, a
dropped connection or a timeout with the same transaction_id (bounded attempts and time).
Meanwhile Azurite (blob + queue) is restarted once and PostgreSQL is stopped for
``--db-outage`` seconds. Afterwards it waits (bounded) for the queue to drain and prints:
sent, 200s, 503s retried, persisted, duplicates, lost, queue left, poison...

``lost`` (a 200 whose transaction is not in the database), ``duplicates`` (a transaction stored
more than once) and ``poison`` must be 0; the exit code is 1 otherwise.

The functions in this module are also the harness of tests/integration/test_faults.py (the short
version that runs in CI) and of scripts/soak.py.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]

LOOPBACK = "127.0.0.1"


# --- the app ----------------------------------------------------------------------------------

def app_settings(storage: str, database_url: str, suffix: str, **extra: str) -> dict[str, str]:
    """App settings (local.settings.json Values) of one isolated app: own queue and container."""
    return {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": storage,
        "TRANSACTIONS_QUEUE": f"tx-{suffix}",
        "MODEL_CONTAINER": f"models-{suffix}",
        "DATABASE_URL": database_url,
        "SQL_CONNECTION_STRING": "",
        "MODEL_SIGNING_KEY": "",
        "MODEL_REFRESH_SECONDS": "30",
        "HISTORY_TIMEOUT_MS": "250",
        "RETRAIN_SCHEDULE": "0 0 0 1 1 *",
        "AzureWebJobs.retrain_function.Disabled": "true",  # retraining is not under test here
        **extra,
    }


def prepare_app(values: dict[str, str], seed: int = 7) -> str:
    """Tables, container and queues, and a small model trained on simulated history, published
    and promoted; returns its version."""
    from harness.app import ModelFactory
    from shared.cli import ensure_resources
    from shared.config import Settings
    from shared.wiring import Wiring

    wiring = Wiring(Settings.from_env(values))
    try:
        ensure_resources(wiring)
        return ModelFactory(seed=seed).publish(wiring.store)
    finally:
        wiring.close()


def stop_all(host, postgres, azurite, workdir: Path, keep: bool) -> None:
    """Stop what a run started (whichever exist) and remove its folder unless kept."""
    if host is not None:
        host.stop()
    if postgres is not None:
        postgres.stop()
    azurite.stop()
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)


class HostProcess:
    """The dev host serving the function app as its own process (python -m devhost) on 127.0.0.1.

    ``in_flight_visibility`` shortens how long a message the queue trigger fetched stays
    invisible (the host's 10 minutes): a message whose delete was cut off by a storage
    restart is then redelivered within the run instead of 10 minutes later.
    """

    def __init__(self, values: dict[str, str], port: int, log_path: Path, in_flight_visibility: int | None = None):
        self.values = values
        self.port = port
        self.log_path = log_path
        self.in_flight_visibility = in_flight_visibility
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 90.0) -> HostProcess:
        env = {k: v for k, v in os.environ.items() if k not in self.values}
        env.update(self.values)
        boot = "import sys; from devhost.__main__ import main; sys.exit(main(sys.argv[1:]))"
        if self.in_flight_visibility is not None:
            seconds = int(self.in_flight_visibility)
            boot = f"import devhost.queue_trigger as q; q.RECEIVE_VISIBILITY_SECONDS = {seconds}; " + boot
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-c", boot, "--app-root", str(ROOT), "--host", LOOPBACK, "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"dev host exited with {self.process.returncode}; see {self.log_path}")
            try:
                if requests.get(f"{self.base_url}/api/openapi.json", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dev host did not answer within {timeout}s; see {self.log_path}")
            time.sleep(0.25)

    def rss_kib(self) -> int:
        """Resident set size of the serving process, from /proc (Linux)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("VmRSS not found")

    def stop(self) -> str:
        """Stop (SIGTERM, then SIGKILL after 30 s) and return what it printed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""


# --- PostgreSQL outage ----------------------------------------------------------------------------

class PostgresSwitch:
    """Stop and start a throw-away cluster (harness.servers.Postgres) in place:
    clients get "connection refused" while it is down; data and port are kept."""

    def __init__(self, server):
        self.server = server

    def _pg_ctl(self, *args: str) -> None:
        data = self.server.workdir / "data"
        command = [str(self.server.bindir / "pg_ctl"), "-D", str(data), *args]
        if self.server.as_user:
            command = ["runuser", "-u", self.server.as_user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl {args[-1]} failed: {result.stderr.strip() or result.stdout.strip()}")

    def down(self) -> None:
        self._pg_ctl("-m", "fast", "-w", "stop")

    def up(self) -> None:
        port = self.server.port
        self._pg_ctl("-l", str(self.server.workdir / "server.log"), "-w", "-o",
                     f"-p {port} -k {self.server.workdir} -c listen_addresses={LOOPBACK} -c fsync=off "
                     f"-c max_connections=100", "start")


# --- clients ---------------------------------------------------------------------------------------

@dataclass
class Attempt:
    status: int | None  # None: no HTTP answer (connection refused/reset, timeout)
    seconds: float
    error: str = ""
    degraded: bool = False


@dataclass
class Sent:
    transaction_id: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].status == 200


def transactions(count: int, run_id: str, seed: int = 1) -> list[dict[str, Any]]:
    """Valid, realistic-looking transactions with unique ids (the idempotency keys)."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    items = []
    for n in range(count):
        moment = now - timedelta(seconds=rng.uniform(0, 6 * 3600))
        items.append({
            "transaction_id": f"{run_id}-{n:06d}",
            "timestamp": moment.isoformat().replace("+00:00", "Z"),
            "customer_id": f"C{rng.randrange(2000):06d}",
            "terminal_id": f"T{rng.randrange(500):06d}",
            "amount": round(rng.lognormvariate(3.5, 1.0), 2),
        })
    return items


class RetryingClient:
    """POST /api/predict, retrying 503 / no answer / timeout with the same transaction_id.

    Bounded: at most ``max_attempts`` per transaction and ``max_seconds`` in all for it.
    Waits min(Retry-After, ``max_backoff``) after a 503 and a short exponential backoff
    after a transport error.
    """

    def __init__(self, base_url: str, key: str | None = None, timeout: float = 10.0, max_attempts: int = 40,
                 max_seconds: float = 180.0, max_backoff: float = 1.0):
        self.url = f"{base_url.rstrip('/')}/api/predict"
        self.key = key
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_seconds = max_seconds
        self.max_backoff = max_backoff
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            if self.key:
                session.headers["x-functions-key"] = self.key
        return session

    def send(self, transaction: dict[str, Any]) -> Sent:
        sent = Sent(transaction["transaction_id"])
        started = time.monotonic()
        for attempt in range(self.max_attempts):
            begun = time.monotonic()
            try:
                response = self._session().post(self.url, json=transaction, timeout=self.timeout)
            except requests.RequestException as exc:
                sent.attempts.append(Attempt(None, time.monotonic() - begun, type(exc).__name__))
                self._local.session = None  # a broken connection: start afresh
                delay = min(self.max_backoff, 0.05 * 2 ** attempt)
            else:
                degraded = response.status_code == 200 and bool(response.json().get("degraded"))
                sent.attempts.append(Attempt(response.status_code, time.monotonic() - begun, degraded=degraded))
                if response.status_code != 503:
                    return sent  # 200, or a 4xx that retrying cannot fix
                delay = min(self.max_backoff, float(response.headers.get("Retry-After") or 1))
            if time.monotonic() - started + delay > self.max_seconds:
                break
            time.sleep(delay)
        return sent


def send_all(client: RetryingClient, items: list[dict[str, Any]], concurrency: int,
             on_progress: Callable[[int], None] | None = None) -> list[Sent]:
    """Send every transaction with ``concurrency`` client threads; ``on_progress(done)`` after each."""
    done = 0
    lock = threading.Lock()

    def one(item: dict[str, Any]) -> Sent:
        nonlocal done
        result = client.send(item)
        with lock:
            done += 1
            current = done
        if on_progress:
            on_progress(current)
        return result

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="client") as pool:
        return list(pool.map(one, items))


class FaultSchedule:
    """Fires faults when the clients' progress passes given marks; records what happened when."""

    def __init__(self, total: int):
        self.total = total
        self.events: list[tuple[float, str]] = []
        self._marks: list[tuple[float, str, Callable[[], None]]] = []
        self._fired: set[int] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []
        self.started = time.monotonic()

    def at(self, fraction: float, name: str, action: Callable[[], None]) -> FaultSchedule:
        self._marks.append((fraction, name, action))
        return self

    def progress(self, done: int) -> None:
        for index, (fraction, name, action) in enumerate(self._marks):
            with self._lock:
                if index in self._fired or done < fraction * self.total:
                    continue
                self._fired.add(index)
            thread = threading.Thread(target=self._run, args=(name, action), name=f"fault-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, name: str, action: Callable[[], None]) -> None:
        self.note(f"{name}: begin")
        try:
            action()
        except Exception as exc:  # reported, not raised: the clients must go on
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
        self.note(f"{name}: end")

    def note(self, what: str) -> None:
        self.events.append((round(time.monotonic() - self.started, 2), what))

    def join(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        missing = [name for index, (_, name, _) in enumerate(self._marks) if index not in self._fired]
        if missing:
            self.errors.append(f"never fired: {missing}")


def outage(down: Callable[[], None], up: Callable[[], None], seconds: float) -> Callable[[], None]:
    def action() -> None:
        down()
        try:
            time.sleep(seconds)
        finally:
            up()
    return action


# --- the audit --------------------------------------------------------------------------------------

def queue_depth(storage: str, queue_name: str) -> int:
    """Messages in a queue, visible or not (approximate_message_count)."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(storage, queue_name)
    try:
        return client.get_queue_properties().approximate_message_count
    except ResourceNotFoundError:
        return 0


def stored_counts(database_url: str, ids: Iterable[str]) -> dict[str, int]:
    """{transaction_id: rows} for the given ids that are in the database."""
    import sqlalchemy as sa

    from shared.storage.engines import create_db_engine
    from shared.storage.schema import transactions

    engine = create_db_engine(database_url)
    column = transactions.c.transaction_id
    wanted = sorted(set(ids))
    counts: dict[str, int] = {}
    try:
        with engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                query = sa.select(column, sa.func.count()).where(column.in_(wanted[start:start + 500])) \
                    .group_by(column)
                counts.update({row[0]: row[1] for row in conn.execute(query)})
    finally:
        engine.dispose()
    return counts


def wait_until_settled(storage: str, queue_name: str, database_url: str, ok_ids: set[str],
                       timeout: float) -> float:
    """Wait (bounded) until the queue is empty and every 200 is stored; return the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if queue_depth(storage, queue_name) == 0 and set(stored_counts(database_url, ok_ids)) >= ok_ids:
                break
        except Exception:  # storage or database still coming back: keep waiting
            pass
        time.sleep(0.5)
    return time.monotonic() - started


def audit(results: list[Sent], storage: str, queue_name: str, database_url: str,
          settle_seconds: float) -> dict[str, Any]:
    """The figures of a run (waits up to ``settle_seconds`` for the queue trigger to finish)."""
    ok_ids = {s.transaction_id for s in results if s.ok}
    waited = wait_until_settled(storage, queue_name, database_url, ok_ids, settle_seconds)
    all_ids = {s.transaction_id for s in results}
    counts = stored_counts(database_url, all_ids)
    attempts = [a for s in results for a in s.attempts]
    ok_latencies = sorted(a.seconds for a in attempts if a.status == 200)

    def pct(p: float) -> float:
        return round(ok_latencies[min(len(ok_latencies) - 1, int(p * len(ok_latencies)))] * 1000, 1) \
            if ok_latencies else 0.0

    return {
        "sent": len(results),
        "requests": len(attempts),
        "ok_200": sum(s.ok for s in results),
        "degraded_200": sum(1 for s in results if s.ok and s.attempts[-1].degraded),
        "answers_503": sum(a.status == 503 for a in attempts),
        "no_answer": sum(a.status is None for a in attempts),
        "no_answer_kinds": _kinds(a.error for a in attempts if a.status is None),
        "other_status": sum(a.status not in (None, 200, 503) for a in attempts),
        "transactions_retried": sum(len(s.attempts) > 1 for s in results),
        "gave_up": sum(not s.ok for s in results),
        "persisted": len(ok_ids & set(counts)),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "lost": len(ok_ids - set(counts)),
        "stored_without_200": len(set(counts) - ok_ids),
        "queue_left": queue_depth(storage, queue_name),
        "poison": queue_depth(storage, f"{queue_name}-poison"),
        "latency_ms_p50": pct(0.50),
        "latency_ms_p99": pct(0.99),
        "latency_ms_max": round(ok_latencies[-1] * 1000, 1) if ok_latencies else 0.0,
        "settle_seconds": round(waited, 1),
    }


def _kinds(names: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


ROWS = [
    ("sent", "transactions sent"),
    ("ok_200", "answered 200 (in the end)"),
    ("degraded_200", "  of which degraded (history unreadable)"),
    ("requests", "HTTP requests in all"),
    ("answers_503", "503s retried"),
    ("no_answer", "no answer (refused/reset/timeout), retried"),
    ("no_answer_kinds", "  by kind"),
    ("other_status", "other statuses"),
    ("transactions_retried", "transactions that needed a retry"),
    ("gave_up", "gave up (never 200)"),
    ("persisted", "200s persisted"),
    ("duplicates", "duplicates in the database"),
    ("lost", "lost (200 but not persisted)"),
    ("stored_without_200", "stored without a 200 seen"),
    ("redeliveries_ignored", "redeliveries ignored by persist"),
    ("queue_left", "queue left"),
    ("poison", "poison queue"),
    ("latency_ms_p50", "latency of 200s, p50 (ms)"),
    ("latency_ms_p99", "latency of 200s, p99 (ms)"),
    ("latency_ms_max", "latency of 200s, max (ms)"),
    ("settle_seconds", "seconds to drain after the load"),
    ("load_seconds", "seconds of load"),
]


def table(figures: dict[str, Any]) -> str:
    width = max(len(label) for _, label in ROWS)
    lines = [f"| {'figure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    for key, label in ROWS:
        if key in figures:
            lines.append(f"| {label.ljust(width)} | {figures[key]} |")
    return "\n".join(lines)


# --- the full run ------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--db-outage", type=float, default=30.0, help="seconds PostgreSQL is down (default 30)")
    parser.add_argument("--db-outage-at", type=float, default=0.5, help="fraction of the load (default 0.5)")
    parser.add_argument("--azurite-restart-at", type=float, default=0.2, help="fraction of the load (default 0.2)")
    parser.add_argument("--in-flight-visibility", type=int, default=30,
                        help="seconds a fetched queue message stays invisible (the host: 600; default 30)")
    parser.add_argument("--refresh-seconds", type=int, default=30, help="MODEL_REFRESH_SECONDS (default 30)")
    parser.add_argument("--settle-timeout", type=float, default=300.0,
                        help="longest wait for the queue to drain after the load (default 300 s)")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="bound on the whole load phase")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from devhost.azurite import Azurite, free_port
    from harness.servers import start_postgres

    workdir = Path(tempfile.mkdtemp(prefix="fault-run-"))
    azurite = Azurite(blob_port=free_port(), queue_port=free_port(), workdir=workdir / "azurite").start()
    postgres = None
    host = None
    try:
        postgres = start_postgres()
        run_id = f"fr{int(time.time())}"
        values = app_settings(azurite.connection_string, postgres.url, run_id,
                              MODEL_REFRESH_SECONDS=str(args.refresh_seconds))
        version = prepare_app(values)
        host = HostProcess(values, free_port(), workdir / "devhost.log", args.in_flight_visibility).start()
        print(f"serving {version} at {host.base_url}; Azurite :{azurite.blob_port}/:{azurite.queue_port}; "
              f"PostgreSQL :{postgres.port}; logs in {workdir}", flush=True)

        items = transactions(args.transactions, run_id)
        switch = PostgresSwitch(postgres)
        schedule = FaultSchedule(len(items))
        schedule.at(args.azurite_restart_at, "azurite restart", azurite.restart)
        schedule.at(args.db_outage_at, f"postgresql down {args.db_outage:g}s",
                    outage(switch.down, switch.up, args.db_outage))
        client = RetryingClient(host.base_url, max_seconds=min(args.max_seconds, 300.0))
        progress_every = max(1, len(items) // 20)

        def progress(done: int) -> None:
            schedule.progress(done)
            if done % progress_every == 0:
                print(f"  {done}/{len(items)} answered ({time.monotonic() - schedule.started:.0f}s)", flush=True)

        started = time.monotonic()
        results = send_all(client, items, args.concurrency, progress)
        load_seconds = time.monotonic() - started
        schedule.join()
        figures = audit(results, azurite.connection_string, values["TRANSACTIONS_QUEUE"], postgres.url,
                        args.settle_timeout)
        figures["load_seconds"] = round(load_seconds, 1)
        output = host.stop()
        host = None
        figures["redeliveries_ignored"] = output.count("redelivery ignored")
        figures["faults"] = schedule.events
        figures["fault_errors"] = schedule.errors
        figures["settings"] = {k: vars(args)[k] for k in ("transactions", "concurrency", "db_outage",
                                                          "in_flight_visibility", "refresh_seconds")}
        print()
        print(table(figures))
        print("\nfaults (seconds from start):", *(f"{t:>7}s  {what}" for t, what in schedule.events), sep="\n  ")
        if schedule.errors:
            print("fault errors:", schedule.errors)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        good = figures["lost"] == 0 and figures["duplicates"] == 0 and figures["poison"] == 0 \
            and figures["queue_left"] == 0 and figures["gave_up"] == 0 and not schedule.errors
        print("\nRESULT:", "nothing lost, nothing duplicated" if good else "PROBLEMS (see above)")
        return 0 if good else 1
    finally:
        stop_all(host, postgres, azurite, workdir, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
