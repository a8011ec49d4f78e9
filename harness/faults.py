"""Load under injected faults, and the audit afterwards: what scripts/fault_run.py runs in
full, tests/integration/test_faults.py in short, and scripts/soak.py reuses.

Clients send transactions to POST /api/predict through :class:`RecordingClient` — the
product's :class:`shared.client.PredictClient` (503 retried with the same transaction_id
after ``Retry-After``; a dropped connection or timeout retried too), with every attempt
recorded. A :class:`FaultSchedule` fires faults (a storage restart, a database outage) when
the clients' progress passes given marks. :func:`audit` then waits (bounded) for the queue
to drain and counts: 200s, retries, persisted, duplicates, lost, queue left, poison.
"""
from __future__ import annotations

import json
import random
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

from shared.client import PredictClient

from .options import option
from .stats import in_ms, summary


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
    """Valid, realistic-looking transactions of the last 6 hours with unique ids (the
    idempotency keys)."""
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


class GaveUp(Exception):
    """A transaction's time bound passed; not a transport error, so no retry follows."""


class _RecordingSession:
    """What PredictClient posts through: a requests.Session that records each attempt in
    the transaction being sent, starts afresh after a broken connection, and ends the
    retries once the transaction's time bound has passed."""

    def __init__(self, max_seconds: float):
        self.max_seconds = max_seconds
        self.headers: dict[str, str] = {}
        self._session = requests.Session()
        self.sent = Sent("")
        self.started = 0.0

    def begin(self, sent: Sent) -> None:
        self.sent, self.started = sent, time.monotonic()

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        if self.sent.attempts and time.monotonic() - self.started > self.max_seconds:
            raise GaveUp(f"no 200 within {self.max_seconds:g} s")
        self._session.headers.update(self.headers)
        begun = time.monotonic()
        try:
            response = self._session.post(url, **kwargs)
        except requests.RequestException as exc:
            self.sent.attempts.append(Attempt(None, time.monotonic() - begun, type(exc).__name__))
            self._session.close()
            self._session = requests.Session()  # a broken connection: start afresh
            # Any transport failure (reset mid-answer too) is one PredictClient retries.
            raise requests.ConnectionError(str(exc)) from exc
        degraded = response.status_code == 200 and bool(response.json().get("degraded"))
        self.sent.attempts.append(Attempt(response.status_code, time.monotonic() - begun, degraded=degraded))
        return response


class RecordingClient:
    """The product's PredictClient, one per client thread, recording every attempt.

    Bounded: at most ``max_attempts`` per transaction and ``max_seconds`` for it in all.
    A wait (Retry-After after a 503, an exponential backoff from 50 ms after a transport
    error) is never longer than ``max_backoff``.
    """

    def __init__(self, base_url: str, key: str | None = None, timeout: float = 10.0, max_attempts: int = 40,
                 max_seconds: float = 180.0, max_backoff: float = 1.0):
        self.base_url = base_url
        self.key = key
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_seconds = max_seconds
        self.max_backoff = max_backoff
        self._local = threading.local()

    def _client(self) -> tuple[PredictClient, _RecordingSession]:
        found = getattr(self._local, "client", None)
        if found is None:
            session = _RecordingSession(self.max_seconds)
            client = PredictClient(self.base_url, self.key, timeout=self.timeout, session=session)  # type: ignore[arg-type]
            found = self._local.client = (client, session)
        return found

    def send(self, transaction: dict[str, Any]) -> Sent:
        client, session = self._client()
        sent = Sent(transaction["transaction_id"])
        session.begin(sent)
        try:
            client.predict(transaction, retries=self.max_attempts - 1, backoff=0.05, max_wait=self.max_backoff)
        except (requests.RequestException, GaveUp):
            pass  # recorded: the last attempt is not a 200
        return sent


def send_all(client: RecordingClient, items: list[dict[str, Any]], concurrency: int,
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
    """A fault action: ``down()``, ``seconds`` later ``up()`` (also when waiting was interrupted)."""
    def action() -> None:
        down()
        try:
            time.sleep(seconds)
        finally:
            up()
    return action


# --- the audit ----------------------------------------------------------------------------------


def queue_depth(storage: str, queue_name: str) -> int:
    """Messages in a queue, visible or not (approximate_message_count)."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(storage, queue_name)
    try:
        return int(client.get_queue_properties().approximate_message_count or 0)
    except ResourceNotFoundError:
        return 0


def stored_counts(database_url: str, ids: Iterable[str]) -> dict[str, int]:
    """{transaction_id: rows} for the given ids that are in the database."""
    import sqlalchemy as sa

    from shared.storage.engines import create_db_engine
    from shared.storage.schema import transactions as table

    engine = create_db_engine(database_url)
    column = table.c.transaction_id
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
    latency = summary(a.seconds for a in attempts if a.status == 200)
    return {
        "sent": len(results),
        "requests": len(attempts),
        "ok_200": sum(s.ok for s in results),
        "degraded_200": sum(1 for s in results if s.ok and s.attempts[-1].degraded),
        "answers_503": sum(a.status == 503 for a in attempts),
        "no_answer": sum(a.status is None for a in attempts),
        "no_answer_kinds": kinds(a.error for a in attempts if a.status is None),
        "other_status": sum(a.status not in (None, 200, 503) for a in attempts),
        "transactions_retried": sum(len(s.attempts) > 1 for s in results),
        "gave_up": sum(not s.ok for s in results),
        "persisted": len(ok_ids & set(counts)),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "lost": len(ok_ids - set(counts)),
        "stored_without_200": len(set(counts) - ok_ids),
        "queue_left": queue_depth(storage, queue_name),
        "poison": queue_depth(storage, f"{queue_name}-poison"),
        "latency_ms_p50": in_ms(latency, "median"),
        "latency_ms_p99": in_ms(latency, "p99"),
        "latency_ms_max": in_ms(latency, "max"),
        "settle_seconds": round(waited, 1),
    }


def kinds(names: Iterable[str]) -> dict[str, int]:
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


# --- the full run ---------------------------------------------------------------------------------


@dataclass
class FaultRunOptions:
    transactions: int = option(10_000, "transactions to send")
    concurrency: int = option(8, "client threads")
    db_outage: float = option(30.0, "seconds PostgreSQL is down")
    db_outage_at: float = option(0.5, "when the outage begins, as a fraction of the load")
    azurite_restart_at: float = option(0.2, "when Azurite restarts, as a fraction of the load")
    in_flight_visibility: int = option(30, "seconds a fetched queue message stays invisible (the host: 600)")
    refresh_seconds: int = option(30, "MODEL_REFRESH_SECONDS")
    settle_timeout: float = option(300.0, "longest wait for the queue to drain after the load (s)")
    max_seconds: float = option(1800.0, "bound on the whole load phase (s)")
    json: str | None = option(None, "also write the figures to this file")
    keep: bool = option(False, "keep the temporary folder (logs)")


def fault_run(options: FaultRunOptions) -> int:
    """The whole run on this machine (127.0.0.1 only): a fresh Azurite, a throw-away
    PostgreSQL cluster, a small model, the dev host as its own process; prints the figures
    and returns the exit code (1 when anything was lost, doubled, poisoned or left)."""
    from devhost.azurite import free_port

    from .app import hosted_settings, prepare_app
    from .hosting import HostProcess, stop_all
    from .servers import start_azurite, start_postgres

    workdir = Path(tempfile.mkdtemp(prefix="fault-run-"))
    azurite = start_azurite(workdir / "azurite")
    postgres = host = None
    try:
        postgres = start_postgres()
        run_id = f"fr{int(time.time())}"
        values = hosted_settings(azurite.connection_string, postgres.url, run_id,
                                 MODEL_REFRESH_SECONDS=str(options.refresh_seconds))
        version = prepare_app(values)
        host = HostProcess(values, free_port(), workdir / "devhost.log", options.in_flight_visibility).start()
        print(f"serving {version} at {host.base_url}; Azurite :{azurite.blob_port}/:{azurite.queue_port}; "
              f"PostgreSQL :{postgres.port}; logs in {workdir}", flush=True)

        items = transactions(options.transactions, run_id)
        schedule = FaultSchedule(len(items))
        schedule.at(options.azurite_restart_at, "azurite restart", azurite.restart)
        schedule.at(options.db_outage_at, f"postgresql down {options.db_outage:g}s",
                    outage(postgres.stop_server, postgres.start_server, options.db_outage))
        client = RecordingClient(host.base_url, max_seconds=min(options.max_seconds, 300.0))
        progress_every = max(1, len(items) // 20)

        def progress(done: int) -> None:
            schedule.progress(done)
            if done % progress_every == 0:
                print(f"  {done}/{len(items)} answered ({time.monotonic() - schedule.started:.0f}s)", flush=True)

        started = time.monotonic()
        results = send_all(client, items, options.concurrency, progress)
        load_seconds = time.monotonic() - started
        schedule.join()
        figures = audit(results, azurite.connection_string, values["TRANSACTIONS_QUEUE"], postgres.url,
                        options.settle_timeout)
        figures["load_seconds"] = round(load_seconds, 1)
        output = host.stop()
        host = None
        figures["redeliveries_ignored"] = output.count("redelivery ignored")
        figures["faults"] = schedule.events
        figures["fault_errors"] = schedule.errors
        figures["settings"] = {k: getattr(options, k) for k in ("transactions", "concurrency", "db_outage",
                                                                 "in_flight_visibility", "refresh_seconds")}
        print()
        print(table(figures))
        print("\nfaults (seconds from start):", *(f"{t:>7}s  {what}" for t, what in schedule.events), sep="\n  ")
        if schedule.errors:
            print("fault errors:", schedule.errors)
        if options.json:
            Path(options.json).write_text(json.dumps(figures, indent=2) + "\n")
        good = figures["lost"] == 0 and figures["duplicates"] == 0 and figures["poison"] == 0 \
            and figures["queue_left"] == 0 and figures["gave_up"] == 0 and not schedule.errors
        print("\nRESULT:", "nothing lost, nothing duplicated" if good else "PROBLEMS (see above)")
        return 0 if good else 1
    finally:
        stop_all(host, postgres, azurite, workdir, keep=options.keep)
