"""Command line: ``python -m devhost --app-root . --port 7071``.

Exit codes: 0 after a clean stop (SIGINT/SIGTERM), 1 when the port is in use,
2 when the app cannot start (the message says why).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

from .config import DevHostError
from .host import DEFAULT_POLLING_CAP, FunctionHost
from .http_trigger import PortInUseError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devhost", description="Run a Python v1 function app locally.")
    parser.add_argument("--app-root", default=".", help="the function app folder (with host.json); default: .")
    parser.add_argument("--port", type=int, default=None,
                        help="HTTP port (default: Host.LocalHttpPort in local.settings.json, else 7071)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--settings", default=None,
                        help="settings file (default: local.settings.json, else local.settings.json.example)")
    parser.add_argument("--max-polling-interval", type=float, default=DEFAULT_POLLING_CAP, metavar="SECONDS",
                        help=f"cap on the queue polling backoff (default {DEFAULT_POLLING_CAP:g}; "
                             "0 = no cap, host.json maxPollingInterval as the host uses it)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record, datefmt=None):  # noqa: N802 - logging API
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_UtcFormatter("[%(asctime)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every request at INFO


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)
    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    host = FunctionHost(args.app_root, settings_file=args.settings, host=args.host, port=args.port,
                        max_polling_interval=args.max_polling_interval or None)
    try:
        host.start()
    except PortInUseError as exc:
        print(f"devhost: {exc}", file=sys.stderr)
        return 1
    except DevHostError as exc:
        print(f"devhost: {exc}", file=sys.stderr)
        return 2
    try:
        while not stop_requested.wait(0.5):
            pass
    finally:
        logging.getLogger("devhost").info("Stopping...")
        host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
