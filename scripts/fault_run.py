#!/usr/bin/env python3
"""Fault run: transactions through the dev host while storage restarts and the database goes away.

    .venv/bin/python scripts/fault_run.py                      # 10,000 transactions, DB down 30 s
    .venv/bin/python scripts/fault_run.py --transactions 2000 --db-outage 10 --json out.json

Everything runs on this machine, on 127.0.0.1 only: a fresh Azurite (free ports, temporary
folder), a throw-away PostgreSQL cluster (Debian's binaries, as in the tests), a small model
trained on simulated history and published, and the function app served by the dev host as
its own process. Clients (the product's PredictClient) send every transaction to
POST /api/predict and retry a 503, a dropped connection or a timeout with the same
transaction_id (bounded attempts and time). Meanwhile Azurite (blob + queue) is restarted once
and PostgreSQL is stopped for ``--db-outage`` seconds. Afterwards it waits (bounded) for the
queue to drain and prints: sent, 200s, 503s retried, persisted, duplicates, lost, queue left,
poison... ``lost``, ``duplicates`` and ``poison`` must be 0; the exit code is 1 otherwise.

The machinery is harness.faults (also behind tests/integration/test_faults.py).
"""
from __future__ import annotations

import argparse
import sys

from harness.faults import FaultRunOptions, fault_run


def main(argv: list[str] | None = None) -> int:
    defaults = FaultRunOptions()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=defaults.transactions)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--db-outage", type=float, default=defaults.db_outage,
                        help="seconds PostgreSQL is down (default 30)")
    parser.add_argument("--db-outage-at", type=float, default=defaults.db_outage_at,
                        help="fraction of the load (default 0.5)")
    parser.add_argument("--azurite-restart-at", type=float, default=defaults.azurite_restart_at,
                        help="fraction of the load (default 0.2)")
    parser.add_argument("--in-flight-visibility", type=int, default=defaults.in_flight_visibility,
                        help="seconds a fetched queue message stays invisible (the host: 600; default 30)")
    parser.add_argument("--refresh-seconds", type=int, default=defaults.refresh_seconds,
                        help="MODEL_REFRESH_SECONDS (default 30)")
    parser.add_argument("--settle-timeout", type=float, default=defaults.settle_timeout,
                        help="longest wait for the queue to drain after the load (default 300 s)")
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds,
                        help="bound on the whole load phase")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    return fault_run(FaultRunOptions(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    sys.exit(main())
