"""Clients hammering the hot terminal (bench.datasets.HOT_TERMINAL), in their own process so
their Python does not share a GIL with the measuring client.

    python -m bench.hot_clients_job URL SECONDS CLIENTS ID_PREFIX

Prints one JSON line: requests, statuses, degraded answers, latency summary (harness.stats).
"""
import json
import random
import sys
import time
from typing import Any

from bench.datasets import HOT_CUSTOMERS, HOT_TERMINAL
from bench.harness import Record, client_loop, payload, run_clients
from harness.faults import kinds
from harness.stats import summary

url, seconds, clients, prefix = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + seconds
records: list[Record] = []  # list.append is atomic: the client threads share it


def client(index: int) -> None:
    rng = random.Random(index)

    def body(n: int) -> dict[str, Any]:
        return payload(f"{prefix}-{index}-{n}", f"H{rng.randrange(HOT_CUSTOMERS):06d}", HOT_TERMINAL,
                       rng.lognormvariate(3.0, 0.8), rng)

    client_loop(url, body, lambda: time.monotonic() >= deadline, records.append)


elapsed = run_clients(client, clients)
ok = [r for r in records if r[2] == "200"]
print(json.dumps({"requests": len(records), "statuses": kinds(r[2] for r in records),
                  "degraded": sum(r[3] for r in ok), "throughput": len(ok) / elapsed,
                  "latency": summary(r[1] for r in ok)}))
