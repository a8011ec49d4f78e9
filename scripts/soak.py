#!/usr/bin/env python3
"""Soak: steady load on the function app through the dev host; memory and errors over time.

    .venv/bin/python scripts/soak.py                       # 5 minutes at 40 requests/s
    .venv/bin/python scripts/soak.py --seconds 60 --rate 20 --json soak.json

On 127.0.0.1 only (a fresh Azurite, SQLite or --db postgres, a small model, the dev host as its
own process); every run is bounded and stops by itself. Prints start/warm/end/max RSS, error
rate and latencies; exit code 1 on errors, lost transactions or RSS growth over --max-growth-mib.
The machinery is harness.soak.
"""
from __future__ import annotations

import argparse
import sys

from harness.soak import SoakOptions, soak


def main(argv: list[str] | None = None) -> int:
    defaults = SoakOptions()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=defaults.seconds,
                        help="length of the steady load (default 300)")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="requests per second (default 40)")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="client threads (default 8)")
    parser.add_argument("--warmup", type=float, default=defaults.warmup, help="seconds before the 'warm' RSS sample")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default=defaults.db)
    parser.add_argument("--max-growth-mib", type=float, default=defaults.max_growth_mib,
                        help="fail when RSS grows more than this from warm to end (default 64)")
    parser.add_argument("--json", help="also write the figures to this file")
    return soak(SoakOptions(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    sys.exit(main())
