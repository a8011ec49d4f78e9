"""Soak: steady load on the function app through the dev host; memory and errors over time
(what scripts/soak.py runs).

On 127.0.0.1 only: a fresh Azurite, a temporary SQLite file (or a throw-away PostgreSQL
cluster), a small published model, and the dev host as its own process. Requests go out at a
fixed rate (bounded: rate x seconds requests at most, and the run stops by itself): POST
/api/predict, and every 50th request a POST /api/labels for earlier transactions. The serving
process's resident memory (VmRSS) is sampled every 5 s. At the end it waits (bounded) for the
queue to drain and checks that every 200 was stored.
"""
from __future__ import annotations

import json
import random
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from devhost.azurite import free_port

from .app import hosted_settings, prepare_app
from .faults import queue_depth, stored_counts, transactions, wait_until_settled
from .hosting import HostProcess, stop_all
from .options import option
from .servers import start_azurite, start_postgres
from .stats import in_ms, summary

MAX_REQUESTS = 100_000


@dataclass
class SoakOptions:
    seconds: float = option(300.0, "length of the steady load")
    rate: float = option(40.0, "requests per second")
    workers: int = option(8, "client threads")
    warmup: float = option(30.0, "seconds before the 'warm' RSS sample")
    db: str = option("sqlite", "the database", choices=("sqlite", "postgres"))
    max_growth_mib: float = option(64.0, "fail when RSS grows more than this from warm to end")
    json: str | None = option(None, "also write the figures to this file")


def soak(args: SoakOptions) -> int:
    """The whole soak run; prints the figures and returns the exit code."""
    total = min(MAX_REQUESTS, int(args.rate * args.seconds))
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    azurite = start_azurite(workdir / "azurite")
    postgres = host = None
    keep = False
    try:
        if args.db == "postgres":
            postgres = start_postgres()
            database_url = postgres.url
        else:
            database_url = f"sqlite:///{workdir / 'fraud.db'}"
        run_id = f"soak{int(time.time())}"
        values = hosted_settings(azurite.connection_string, database_url, run_id, MODEL_REFRESH_SECONDS="30")
        version = prepare_app(values)
        host = HostProcess(values, free_port(), workdir / "devhost.log").start()
        samples = [(0.0, host.rss_kib())]
        print(f"serving {version} at {host.base_url} ({args.db}); {total} requests over {args.seconds:g}s; "
              f"RSS at start {samples[0][1] / 1024:.1f} MiB", flush=True)

        items = transactions(total, run_id, seed=3)
        local = threading.local()
        lock = threading.Lock()
        latencies: list[float] = []
        statuses: dict[str, int] = {}
        ok_ids: set[str] = set()
        problems: list[str] = []
        stop = threading.Event()
        started = time.monotonic()
        deadline = started + args.seconds + 60  # hard bound, whatever happens

        def session() -> requests.Session:
            if getattr(local, "session", None) is None:
                local.session = requests.Session()
            return local.session

        def one(index: int) -> None:
            assert host is not None
            due = started + index / args.rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            if stop.is_set() or time.monotonic() > deadline:
                return
            item = items[index]
            begun = time.monotonic()
            try:
                if index % 50 == 49 and index >= 100:
                    earlier = random.Random(index).sample(items[:index], 10)
                    reply = session().post(f"{host.base_url}/api/labels", timeout=10, json={"labels": [
                        {"transaction_id": e["transaction_id"], "is_fraud": False} for e in earlier]})
                    key = f"labels {reply.status_code}"
                else:
                    reply = session().post(f"{host.base_url}/api/predict", json=item, timeout=10)
                    key = f"predict {reply.status_code}"
                    if reply.status_code != 200 and len(problems) < 20:
                        problems.append(f"{item['transaction_id']}: {reply.status_code} {reply.text[:200]}")
                    if reply.status_code == 200:
                        with lock:
                            ok_ids.add(item["transaction_id"])
            except requests.RequestException as exc:
                local.session = None
                key = f"error {type(exc).__name__}"
            elapsed = time.monotonic() - begun
            with lock:
                statuses[key] = statuses.get(key, 0) + 1
                latencies.append(elapsed)

        def sample_memory() -> None:
            assert host is not None
            while not stop.wait(5.0):
                samples.append((round(time.monotonic() - started, 1), host.rss_kib()))

        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        with ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="soak") as pool:
            for index in range(total):
                # Keep the backlog small: submit about one second ahead of the schedule.
                while index / args.rate > time.monotonic() - started + 1.0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                pool.submit(one, index)
        load_seconds = time.monotonic() - started
        stop.set()
        sampler.join(timeout=10)
        samples.append((round(time.monotonic() - started, 1), host.rss_kib()))

        waited = wait_until_settled(azurite.connection_string, values["TRANSACTIONS_QUEUE"], database_url,
                                    ok_ids, timeout=120)
        stored = stored_counts(database_url, ok_ids)
        warm = next((kib for t, kib in samples if t >= args.warmup), samples[-1][1])
        requests_sent = sum(statuses.values())
        failures = sum(n for k, n in statuses.items() if not k.endswith(" 200"))
        latency = summary(latencies)

        figures: dict[str, Any] = {
            "db": args.db, "seconds": round(load_seconds, 1), "requests": requests_sent,
            "achieved_rate": round(requests_sent / load_seconds, 1), "statuses": statuses,
            "error_rate": round(failures / requests_sent, 6) if requests_sent else None,
            "latency_ms_p50": in_ms(latency, "median"), "latency_ms_p99": in_ms(latency, "p99"),
            "latency_ms_max": in_ms(latency, "max"),
            "rss_mib_start": round(samples[0][1] / 1024, 1), "rss_mib_warm": round(warm / 1024, 1),
            "rss_mib_end": round(samples[-1][1] / 1024, 1),
            "rss_mib_max": round(max(kib for _, kib in samples) / 1024, 1),
            "predict_200": len(ok_ids), "persisted": len(stored), "lost": len(ok_ids - set(stored)),
            "duplicates": sum(n - 1 for n in stored.values() if n > 1),
            "queue_left": queue_depth(azurite.connection_string, values["TRANSACTIONS_QUEUE"]),
            "poison": queue_depth(azurite.connection_string, values["TRANSACTIONS_QUEUE"] + "-poison"),
            "drain_seconds": round(waited, 1),
            "problems": problems,
            "rss_samples": samples,
        }
        growth = (samples[-1][1] - warm) / 1024
        width = 28
        print()
        for key in ("db", "seconds", "requests", "achieved_rate", "statuses", "error_rate", "latency_ms_p50",
                    "latency_ms_p99", "latency_ms_max", "rss_mib_start", "rss_mib_warm", "rss_mib_end",
                    "rss_mib_max", "predict_200", "persisted", "lost", "duplicates", "queue_left", "poison",
                    "drain_seconds"):
            print(f"{key.ljust(width)} {figures[key]}")
        print(f"{'rss growth warm->end (MiB)'.ljust(width)} {growth:.1f}")
        print("RSS samples (s, MiB):", ", ".join(f"{t:g}:{kib / 1024:.0f}" for t, kib in samples[::6]))
        for problem in problems:
            print("non-200:", problem)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        good = failures == 0 and figures["lost"] == 0 and figures["duplicates"] == 0 and \
            figures["poison"] == 0 and growth <= args.max_growth_mib
        print("\nRESULT:", "steady" if good else "PROBLEMS (see above)")
        if not good:
            keep = True
            print(f"logs kept in {workdir}")
        return 0 if good else 1
    finally:
        stop_all(host, postgres, azurite, workdir, keep=keep)

