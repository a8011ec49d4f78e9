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

from bench.clients import Record, client_loop, payload, run_clients
from bench.datasets import HOT_CUSTOMERS, HOT_TERMINAL

url, seconds, clients, prefix = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + seconds
records: list[Record] = []  # list.append is atomic: the client threads share it


def client(index: int) -> None:
    rng = random.Random(index)

    def body(n: int) -> dict[str, Any]:
        return payload(f"{prefix}-{index}-{n}", f"H{rng.randrange(HOT_CUSTOMERS):06d}", HOT_TERMINAL,
                       rng.lognormvariate(3.0, 0.8), rng)

    client_loop(url, body, lambda: time.monotonic() >= deadline, records.append)


started = time.time()
elapsed = run_clients(client, clients)
stopped = time.time()
ok = [r for r in records if r[2] == "200"]
statuses: dict[str, int] = {}
for record in records:
    statuses[record[2]] = statuses.get(record[2], 0) + 1
print(json.dumps({"requests": len(records), "statuses": statuses, "degraded": sum(r[3] for r in ok),
                  "throughput": len(ok) / elapsed, "started": started, "stopped": stopped,
                  "latency_seconds": sorted(r[1] for r in ok)}))
