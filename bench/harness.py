"""Machinery for the benchmarks: real Azurite, SQLite histories, a trained model,
timing helpers and the printed table."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def latency_stats(call: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median and p99 of ``repeats`` calls, in microseconds."""
    samples = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        call()
        samples[i] = time.perf_counter() - start
    samples *= 1e6
    return {"median_us": float(np.median(samples)), "p99_us": float(np.percentile(samples, 99)), "n": repeats}


@dataclass
class Row:
    section: str
    what: str
    stats: dict[str, float] | None
    note: str = ""


def _fmt_us(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} s"
    if value >= 1e3:
        return f"{value / 1e3:.2f} ms"
    return f"{value:.1f} µs"


def print_table(rows: list[Row], title: str) -> None:
    header = ("section", "measure", "median", "p99", "n", "notes")
    table = [header] + [
        (r.section, r.what, _fmt_us(r.stats["median_us"]) if r.stats else "-",
         _fmt_us(r.stats["p99_us"]) if r.stats else "-", str(r.stats["n"]) if r.stats else "-", r.note)
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    print(f"\n{title}")
    for index, line in enumerate(table):
        print("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) + " |")
        if index == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def history_start(days: int) -> str:
    """A start date so that a simulated history of ``days`` ends about now."""
    return (datetime.now(timezone.utc) - timedelta(days=days)).date().isoformat()


class BenchApp:
    """An app environment: settings in os.environ, a SQLite history, a promoted model."""

    def __init__(self, env: Environment, history_rows: int):
        from shared.cli import ensure_resources
        from shared.services import import_history
        from shared.simulator import simulate_for_volume
        from shared.wiring import get_wiring, reset_wiring

        self.suffix = uuid.uuid4().hex[:8]
        self.db_path = env.workdir / f"history-{history_rows}.db"
        self.settings = {
            "AzureWebJobsStorage": env.azurite.connection_string,
            "TRANSACTIONS_QUEUE": f"tx-{self.suffix}",
            "MODEL_CONTAINER": f"models-{self.suffix}",
            "DATABASE_URL": f"sqlite:///{self.db_path}",
            "MODEL_REFRESH_SECONDS": "60",
            "RETRAIN_SCHEDULE": "0 0 0 1 1 *",
        }
        os.environ.update(self.settings)
        reset_wiring()
        self.services = get_wiring()
        ensure_resources(self.services)
        days = 183
        self.history = simulate_for_volume(history_rows, seed=11, n_days=days, start_date=history_start(days))
        import_history(self.services, self.history)
        env.publish_model(self.services.store)

    def sample_requests(self, count: int) -> list[dict[str, Any]]:
        """New transactions of known customers at known terminals, just after the history."""
        rng = random.Random(5)
        last = self.history["timestamp"].max().to_pydatetime()
        picks = self.history.sample(count, random_state=5, replace=True)
        return [{
            "transaction_id": f"bench-{self.suffix}-{i}",
            "timestamp": (last + timedelta(seconds=rng.randint(1, 3600))).isoformat(),
            "customer_id": row.customer_id,
            "terminal_id": row.terminal_id,
            "amount": round(float(row.amount) * rng.uniform(0.5, 1.5), 2),
        } for i, row in enumerate(picks.itertuples())]

    def drain(self) -> None:
        self.services.queue.client.clear_messages()


class Environment:
    """Owns the Azurite process and the temporary files of a benchmark run."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.azurite = None
        self._model: dict[str, Any] | None = None
        self._apps: dict[int, BenchApp] = {}

    def __enter__(self) -> Environment:
        from devhost.azurite import Azurite, free_port

        self.azurite = Azurite(blob_port=free_port(), queue_port=free_port(), workdir=self.workdir / "azurite")
        self.azurite.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.azurite:
            self.azurite.stop()

    # --- model ------------------------------------------------------------------------

    def trained_model(self) -> dict[str, Any]:
        """The production configuration trained on 100k simulated transactions."""
        if self._model is None:
            from shared.compiled import OnnxScorer
            from shared.features import DEFAULT_SPEC
            from shared.model import LoadedModel, new_version
            from shared.retraining import package_candidate, train_candidate
            from shared.simulator import simulate_for_volume
            from shared.training import TrainingParams

            days = 90
            history = simulate_for_volume(100_000, seed=3, n_days=days, start_date=history_start(days))
            params = TrainingParams()
            candidate = train_candidate(history, DEFAULT_SPEC, params, "max_f1")
            version = new_version()
            model_bytes, metadata, files = package_candidate(version, candidate, params, "max_f1", DEFAULT_SPEC, "")
            self._model = {
                "pipeline": candidate.pipeline,
                "holdout": candidate.holdout_frame,
                "serving": LoadedModel(version, metadata, OnnxScorer(files["model.onnx"]), compiled=True),
                "package": (version, model_bytes, metadata, files),
            }
        return self._model

    def publish_model(self, store) -> None:
        version, model_bytes, metadata, files = self.trained_model()["package"]
        if version not in [m["version"] for m in store.list_versions()]:
            store.publish(version, model_bytes, metadata, files)
        store.promote(version)

    # --- sections ---------------------------------------------------------------------

    def app(self, history_rows: int) -> BenchApp:
        if history_rows not in self._apps:
            self._apps[history_rows] = BenchApp(self, history_rows)
        return self._apps[history_rows]

    def end_to_end(self, seconds: float, clients: int, rate: float) -> dict[str, Any]:
        import requests
        import sqlalchemy as sa

        from devhost.azurite import free_port, wait_for_port
        from shared.storage import db

        app = self._apps.get(1_000_000) or self._apps.get(100_000) or self.app(100_000)
        suffix = uuid.uuid4().hex[:8]
        settings = {**app.settings, "TRANSACTIONS_QUEUE": f"e2e-{suffix}"}
        port = free_port()
        env = {**os.environ, **settings}
        log = open(self.workdir / f"devhost-{suffix}.log", "w")
        host = subprocess.Popen([sys.executable, "-m", "devhost", "--app-root", str(ROOT), "--port", str(port),
                                 "--max-polling-interval", "0.5"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, timeout=60)
            payloads = app.sample_requests(int(seconds * 2000))
            for p in payloads:
                p["transaction_id"] = p["transaction_id"].replace(app.suffix, suffix)
            url = f"http://127.0.0.1:{port}/api/predict"
            requests.post(url, json=payloads[0], timeout=30)  # warm: model load
            accepted: list[str] = [payloads[0]["transaction_id"]]
            latencies: list[float] = []
            errors = [0]
            cursor = [1]
            lock = threading.Lock()
            deadline = time.monotonic() + seconds

            def client() -> None:
                session = requests.Session()
                while time.monotonic() < deadline:
                    with lock:
                        if cursor[0] >= len(payloads):
                            return
                        payload = payloads[cursor[0]]
                        cursor[0] += 1
                    start = time.perf_counter()
                    try:
                        response = session.post(url, json=payload, timeout=10)
                        ok = response.status_code == 200
                    except requests.RequestException:
                        ok = False
                    elapsed = time.perf_counter() - start
                    with lock:
                        if ok:
                            accepted.append(payload["transaction_id"])
                            latencies.append(elapsed * 1e6)
                        else:
                            errors[0] += 1

            started = time.monotonic()
            threads = [threading.Thread(target=client) for _ in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
            # Wait (bounded) until persist has caught up with everything accepted.
            engine = db.create_db_engine(settings["DATABASE_URL"])
            wanted = set(accepted)
            persisted: set[str] = set()
            wait_until = time.monotonic() + 180
            while time.monotonic() < wait_until:
                with engine.connect() as conn:
                    persisted = set(conn.execute(sa.select(db.transactions.c.transaction_id).where(
                        db.transactions.c.transaction_id.like(f"bench-{suffix}-%"))).scalars())
                if wanted <= persisted:
                    break
                time.sleep(0.5)
            engine.dispose()
            lat = np.array(latencies)
            return {
                "throughput": len(latencies) / elapsed,
                "accepted": len(wanted),
                "persisted": len(wanted & persisted),
                "lost": len(wanted - persisted),
                "errors": errors[0],
                "accept_latency": {"median_us": float(np.median(lat)), "p99_us": float(np.percentile(lat, 99)),
                                   "n": len(lat)},
            }
        finally:
            host.terminate()
            try:
                host.wait(timeout=15)
            except subprocess.TimeoutExpired:
                host.kill()
            log.close()

    def retrain(self, size: int) -> dict[str, Any]:
        """Run the retraining job on ``size`` labeled transactions in a fresh process."""
        from shared.cli import ensure_resources
        from shared.config import Settings
        from shared.services import import_history
        from shared.simulator import simulate_for_volume
        from shared.wiring import Wiring

        suffix = uuid.uuid4().hex[:8]
        settings = {
            "AzureWebJobsStorage": self.azurite.connection_string,
            "TRANSACTIONS_QUEUE": f"rt-{suffix}",
            "MODEL_CONTAINER": f"rt-{suffix}",
            "DATABASE_URL": f"sqlite:///{self.workdir / f'retrain-{size}.db'}",
        }
        services = Wiring(Settings.from_env(settings))
        ensure_resources(services)
        days = 183
        import_history(services, simulate_for_volume(size, seed=21, n_days=days, start_date=history_start(days)))
        services.close()
        child = subprocess.run([sys.executable, "-m", "bench.retrain_job"], cwd=ROOT, env={**os.environ, **settings},
                               capture_output=True, text=True, timeout=1800)
        if child.returncode != 0:
            raise RuntimeError(f"retrain job failed: {child.stderr[-2000:]}")
        return json.loads(child.stdout.strip().splitlines()[-1])

    def cold_start(self, repeats: int) -> dict[str, float]:
        app = next(iter(self._apps.values()), None) or self.app(100_000)
        env = {**os.environ, **app.settings}
        payload = json.dumps(app.sample_requests(1)[0])
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            child = subprocess.run([sys.executable, "-m", "bench.cold_start_job", payload], cwd=ROOT, env=env,
                                   capture_output=True, text=True, timeout=120)
            samples.append((time.perf_counter() - start) * 1e6)
            if child.returncode != 0 or '"status": 200' not in child.stdout:
                raise RuntimeError(f"cold start failed: {child.stdout[-500:]} {child.stderr[-2000:]}")
        app.drain()
        return {"median_us": float(np.median(samples)), "p99_us": float(np.max(samples)), "n": repeats}
