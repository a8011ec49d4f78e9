"""Light clients of the predict endpoint for the load sections (requests only: the hot
clients' process starts in well under a second)."""
from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import requests


def payload(transaction_id: str, customer: str, terminal: str, amount: float, rng: random.Random) -> dict[str, Any]:
    """A transaction of the last few minutes (predict takes only recent ones)."""
    moment = datetime.now(timezone.utc) - timedelta(seconds=rng.uniform(1, 600))
    return {"transaction_id": transaction_id, "timestamp": moment.isoformat(), "customer_id": customer,
            "terminal_id": terminal, "amount": round(amount, 2)}


Record = tuple[float, float, str, bool]  # (wall-clock start, seconds, status or error name, degraded)


def client_loop(url: str, next_body: Any, until: Any, record: Any, pause: float = 0.0) -> None:
    """One client: POST ``next_body(n)`` to predict, one request at a time, until ``until()``;
    ``record(Record)`` after each (a transport error is recorded by its name, then a new
    connection is made)."""
    session = requests.Session()
    n = 0
    while not until():
        body = next_body(n)
        n += 1
        begun = time.time()  # wall clock: comparable across processes
        try:
            reply = session.post(url, json=body, timeout=10)
            status, degraded = str(reply.status_code), reply.status_code == 200 and bool(reply.json().get("degraded"))
        except requests.RequestException as exc:
            session = requests.Session()
            status, degraded = type(exc).__name__, False
        record((begun, time.time() - begun, status, degraded))
        if pause:
            time.sleep(pause)


def run_clients(client: Any, count: int) -> float:
    """Run ``client(index)`` in ``count`` threads until all return; the seconds it took."""
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started
