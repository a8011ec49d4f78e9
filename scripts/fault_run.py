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

import sys

from harness.faults import FaultRunOptions, fault_run
from harness.options import parse_options


def main(argv: list[str] | None = None) -> int:
    return fault_run(parse_options(FaultRunOptions, (__doc__ or "").split("\n\n")[0], argv))


if __name__ == "__main__":
    sys.exit(main())
