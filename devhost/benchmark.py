"""HTTP throughput of devhost for a trivial function: ``python -m devhost.benchmark``.

Builds a one-function app in a temporary folder, runs ``python -m devhost`` on a
free loopback port in a child process, and sends small JSON POSTs over
keep-alive connections from client processes for a fixed time. Prints
requests/s and latency percentiles (JSON with ``--json``). Traffic goes to
127.0.0.1 only, and every loop is bounded in time.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devhost.azurite import free_port

TRIVIAL_FUNCTION = '''
import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.get_body(), mimetype="application/json")
'''
FUNCTION_JSON = {"bindings": [
    {"authLevel": "anonymous", "type": "httpTrigger", "direction": "in", "name": "req", "methods": ["post"],
     "route": "bench"},
    {"type": "http", "direction": "out", "name": "$return"},
]}
BODY = json.dumps({"transaction_id": "tx-1", "amount": 12.5, "customer_id": "C000001"}).encode()


def _client(port: int, seconds: float, threads: int, keep_alive: bool, results) -> None:
    """One client process: ``threads`` connections posting until the time is up."""
    import threading

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine = []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                headers = {"Content-Type": "application/json"}
                if not keep_alive:
                    headers["Connection"] = "close"
                conn.request("POST", "/api/bench", body=BODY, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(response.status)
                mine.append(time.perf_counter() - started)
                if not keep_alive:
                    conn.close()
            except Exception:  # noqa: BLE001 - count and reconnect
                with lock:
                    errors[0] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.close()
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put((latencies, errors[0]))


def run_benchmark(seconds: float = 10.0, processes: int = 2, threads: int = 4, keep_alive: bool = True) -> dict:
    """Measure; return requests/s, latency percentiles (ms) and error count."""
    with tempfile.TemporaryDirectory(prefix="devhost-bench-") as tmp:
        app = Path(tmp)
        (app / "host.json").write_text(json.dumps({"version": "2.0"}))
        (app / "bench_trivial").mkdir()
        (app / "bench_trivial" / "function.json").write_text(json.dumps(FUNCTION_JSON))
        (app / "bench_trivial" / "__init__.py").write_text(TRIVIAL_FUNCTION)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "devhost", "--app-root", str(app), "--port", str(port)],
                                  cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError as exc:
                    if server.poll() is not None or time.monotonic() > deadline:
                        error = server.stderr.read().decode() if server.stderr else ""
                        raise RuntimeError(f"devhost did not start: {error}") from exc
                    time.sleep(0.1)
            results: multiprocessing.Queue = multiprocessing.Queue()
            clients = [multiprocessing.Process(target=_client, args=(port, seconds, threads, keep_alive, results))
                       for _ in range(processes)]
            started = time.monotonic()
            for client in clients:
                client.start()
            collected = [results.get(timeout=seconds + 60) for _ in clients]
            elapsed = time.monotonic() - started
            for client in clients:
                client.join()
        finally:
            server.terminate()
            server.wait(timeout=30)
    from harness.stats import percentile  # the one percentile definition (nearest rank)

    latencies = [latency * 1000 for part, _ in collected for latency in part]
    errors = sum(e for _, e in collected)
    if not latencies:
        raise RuntimeError(f"no successful request ({errors} errors)")
    return {
        "requests": len(latencies), "errors": errors, "seconds": round(elapsed, 2),
        "connections": processes * threads, "keep_alive": keep_alive,
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "median_ms": round(statistics.median(latencies), 2), "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=4, help="connections per client process")
    parser.add_argument("--no-keep-alive", action="store_true", help="a new connection for every request")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run_benchmark(args.seconds, args.processes, args.threads, keep_alive=not args.no_keep_alive)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
