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

import sys

from harness.options import parse_options
from harness.soak import SoakOptions, soak


def main(argv: list[str] | None = None) -> int:
    return soak(parse_options(SoakOptions, (__doc__ or "").split("\n\n")[0], argv))


if __name__ == "__main__":
    sys.exit(main())
