"""Labeled histories for the benchmarks, loaded in bulk and kept for the next run.

A history of N transactions is simulated with :func:`shared.simulator.simulate_for_volume`
in parts of at most ``PART_ROWS`` rows (each part its own population: its own seed and its
own customer/terminal id prefix, so memory stays bounded at 10M rows), ending yesterday.
Every transaction older than ``LABEL_DELAY_DAYS`` has a label (received that many days
after it, source ``import``); the newer ones have none yet.

Rows are written in bulk (SQLite ``executemany``, PostgreSQL ``COPY``), secondary indexes
built afterwards, and the feature buckets rebuilt set-based with
:func:`shared.storage.aggregates.rebuild_buckets` (the same definitions the product keeps
on write). :func:`import_rate` measures the product path (``shared.operations.import_history``,
idempotent, maintaining the buckets row by row) on a sample for comparison.

Optionally a *hot terminal* (``HOT_TERMINAL``) gets its own rows: that many transactions
spread over the same days, paid by its own customers.

SQLite files live in ``bench-results/data/`` (git-ignored) with a ``.json`` beside each
describing it; a file is reused while it describes the same request and its history ends
less than ``MAX_AGE_DAYS`` ago.

    python -m bench.datasets --rows 10000000             # build (or reuse) one file
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "bench-results" / "data"
PART_ROWS = 2_500_000
LABEL_DELAY_DAYS = 3
MAX_AGE_DAYS = 7
HOT_TERMINAL = "THOT000001"
HOT_CUSTOMERS = 50_000
FORMAT = 4  # bump when the layout of generated files changes


@dataclass(frozen=True)
class Request:
    """What a generated history holds."""

    rows: int
    days: int = 183
    seed: int = 21
    hot_rows: int = 0
    format: int = FORMAT

    @property
    def name(self) -> str:
        hot = f"-hot{self.hot_rows}" if self.hot_rows else ""
        return f"history-{self.rows}-{self.days}d-s{self.seed}{hot}"


@dataclass
class LoadReport:
    """How a history was loaded: rows, labels, and the seconds of each step."""

    path: str
    rows: int
    labels: int
    start_date: str
    end_date: str
    simulate_seconds: float = 0.0
    insert_seconds: float = 0.0
    index_seconds: float = 0.0
    buckets_seconds: float = 0.0
    reused: bool = False

    @property
    def load_rows_per_second(self) -> float:
        """Bulk insert + indexes + bucket rebuild, per stored transaction."""
        seconds = self.insert_seconds + self.index_seconds + self.buckets_seconds
        return self.rows / seconds if seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "load_rows_per_second": round(self.load_rows_per_second)}


def start_date(days: int) -> str:
    """The first day of a ``days``-long history that ends yesterday (UTC)."""
    return (datetime.now(timezone.utc) - timedelta(days=days)).date().isoformat()


def _parts(request: Request) -> Iterator[tuple[int, int]]:
    """(part index, rows) of each simulated population."""
    count = max(1, math.ceil(request.rows / PART_ROWS))
    for index in range(count):
        yield index, request.rows // count + (1 if index < request.rows % count else 0)


def simulated_parts(request: Request, first_day: str) -> Iterator[Any]:
    """The history as DataFrames, one per population part, then the hot terminal's rows."""
    import pandas as pd

    from shared.simulator import simulate_for_volume

    for index, rows in _parts(request):
        frame = simulate_for_volume(rows, seed=request.seed + 1000 * index, n_days=request.days,
                                    start_date=first_day)
        # simulate_for_volume keeps the first rows of a slightly larger history: move it by
        # whole days so that it ends yesterday, as a live service's history does.
        last_day = pd.Timestamp(first_day, tz="UTC") + pd.Timedelta(days=request.days - 1)
        frame["timestamp"] += pd.Timedelta(days=(last_day - frame["timestamp"].max().floor("D")).days)
        if index:  # another population: its own people and shops
            frame["customer_id"] = frame["customer_id"].str.replace("C", f"C{index}-", n=1, regex=False)
            frame["terminal_id"] = frame["terminal_id"].str.replace("T", f"T{index}-", n=1, regex=False)
        yield frame
    if request.hot_rows:
        rng = np.random.default_rng(request.seed + 7)
        start = pd.Timestamp(first_day, tz="UTC")
        offsets = np.sort(rng.integers(0, request.days * 86_400, request.hot_rows))
        yield pd.DataFrame({
            "transaction_id": [f"hot-{request.seed}-{i:08d}" for i in range(request.hot_rows)],
            "timestamp": start + pd.to_timedelta(offsets, unit="s"),
            "customer_id": [f"H{c:06d}" for c in rng.integers(0, HOT_CUSTOMERS, request.hot_rows)],
            "terminal_id": HOT_TERMINAL,
            "amount": np.round(rng.lognormal(3.0, 0.8, request.hot_rows), 2),
            "label": (rng.random(request.hot_rows) < 0.002).astype(np.int8),
        })


def _columns(frame: Any, now: datetime) -> dict[str, Any]:
    """The stored columns of a simulated frame, as plain Python lists."""
    instants = frame["timestamp"].dt.tz_convert(None).to_numpy().astype("datetime64[us]")
    seconds = instants.astype("datetime64[s]").astype(np.int64)
    # SQLAlchemy's SQLite DATETIME text form: "YYYY-MM-DD HH:MM:SS.ffffff".
    text = np.char.replace(np.datetime_as_string(instants, unit="us"), "T", " ")
    ids = frame["transaction_id"].astype(str).tolist()
    keys = [int.from_bytes(hashlib.sha256(i.encode()).digest()[:4], "big") >> 1 for i in ids]
    cutoff = np.datetime64(now.replace(tzinfo=None) - timedelta(days=LABEL_DELAY_DAYS), "us")
    labeled = instants < cutoff
    labeled_at = np.char.replace(np.datetime_as_string(instants + np.timedelta64(LABEL_DELAY_DAYS, "D"),
                                                       unit="us"), "T", " ")
    return {"ids": ids, "timestamp": text.tolist(), "hour": (seconds // 3600).tolist(),
            "customer": frame["customer_id"].astype(str).tolist(),
            "terminal": frame["terminal_id"].astype(str).tolist(),
            "amount": frame["amount"].astype(float).tolist(), "key": keys, "labeled": labeled,
            "fraud": frame["label"].to_numpy().astype(bool), "labeled_at": labeled_at.tolist()}


TX_COLUMNS = ("transaction_id", "timestamp", "epoch_hour", "customer_id", "terminal_id", "amount", "sample_key",
              "fraud_counted", "degraded", "persisted_at")
LABEL_COLUMNS = ("transaction_id", "is_fraud", "labeled_at", "source", "key_id")
EVENT_COLUMNS = ("transaction_id", "is_fraud", "source", "key_id", "received_at")


def _tables(c: dict[str, Any], persisted: str) -> tuple[list[tuple], list[tuple], list[tuple]]:
    tx = list(zip(c["ids"], c["timestamp"], c["hour"], c["customer"], c["terminal"], c["amount"], c["key"],
                  [False] * len(c["ids"]), [False] * len(c["ids"]), [persisted] * len(c["ids"])))
    chosen = np.flatnonzero(c["labeled"])
    labels = [(c["ids"][i], bool(c["fraud"][i]), c["labeled_at"][i], "import", "bench") for i in chosen]
    events = [(c["ids"][i], bool(c["fraud"][i]), "import", "bench", c["labeled_at"][i]) for i in chosen]
    return tx, labels, events


def _secondary_indexes() -> list[Any]:
    from shared.storage.schema import label_events, labels, transactions

    return [*transactions.indexes, *labels.indexes, *label_events.indexes]


def _drop_indexes(engine: Any) -> None:
    for index in _secondary_indexes():
        index.drop(engine, checkfirst=True)


def _create_indexes(engine: Any) -> None:
    for index in _secondary_indexes():
        index.create(engine, checkfirst=True)


def _write(engine: Any, tx: list[tuple], labels: list[tuple], events: list[tuple]) -> None:
    """Bulk-write one part: executemany on SQLite, COPY on PostgreSQL."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            for table, columns, rows in (("transactions", TX_COLUMNS, tx), ("labels", LABEL_COLUMNS, labels),
                                         ("label_events", EVENT_COLUMNS, events)):
                with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
        else:
            for table, columns, rows in (("transactions", TX_COLUMNS, tx), ("labels", LABEL_COLUMNS, labels),
                                         ("label_events", EVENT_COLUMNS, events)):
                marks = ", ".join("?" * len(columns))
                cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        raw.commit()
    finally:
        raw.close()


def load(engine: Any, request: Request, progress: bool = False) -> LoadReport:
    """Simulate ``request`` and load it into an empty database behind ``engine``."""
    from shared.storage.aggregates import rebuild_buckets
    from shared.storage.schema import create_schema

    now = datetime.now(timezone.utc)
    first_day = start_date(request.days)
    create_schema(engine)
    _drop_indexes(engine)
    report = LoadReport(path=str(engine.url), rows=0, labels=0, start_date=first_day,
                        end_date=(datetime.fromisoformat(first_day) + timedelta(days=request.days)).date().isoformat())
    persisted = now.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    started = time.perf_counter()
    for frame in simulated_parts(request, first_day):
        report.simulate_seconds += time.perf_counter() - started
        started = time.perf_counter()
        tx, labels, events = _tables(_columns(frame, now), persisted)
        del frame
        _write(engine, tx, labels, events)
        report.rows += len(tx)
        report.labels += len(labels)
        report.insert_seconds += time.perf_counter() - started
        if progress:
            print(f"  {report.rows:,} rows written ({report.insert_seconds:.0f} s)", flush=True)
        del tx, labels, events
        started = time.perf_counter()
    started = time.perf_counter()
    _create_indexes(engine)
    report.index_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with engine.begin() as conn:
        rebuild_buckets(conn)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    report.buckets_seconds = time.perf_counter() - started
    return report


def bulk_sqlite_engine(path: Path) -> Any:
    """An engine for loading a new SQLite file: no journal while loading (a failed load is
    deleted, never used), and a page cache and temp store large enough for building
    indexes and grouping millions of rows in memory. The file is left in WAL mode, as the
    service's engines expect it."""
    import sqlalchemy as sa
    from sqlalchemy import event

    engine = sa.create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-1048576", "temp_store=MEMORY"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    return engine


def _wait_for_other_builder(marker: Path, timeout: float = 3 * 3600) -> None:
    """Another process is building this file (its pid in ``marker``): wait until it is done."""
    deadline = time.monotonic() + timeout
    while marker.exists() and time.monotonic() < deadline:
        try:
            os.kill(int(marker.read_text().strip() or 0), 0)
        except (ProcessLookupError, ValueError):
            marker.unlink(missing_ok=True)  # its builder died: the file is rebuilt
            return
        time.sleep(5)


def sqlite_history(request: Request, directory: Path = DATA_DIR, progress: bool = False) -> tuple[Path, LoadReport]:
    """The SQLite file holding ``request``: reused when present and recent, else built."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{request.name}.db"
    described = path.with_suffix(".json")
    _wait_for_other_builder(path.with_suffix(".building"))
    if path.exists() and described.exists():
        info = json.loads(described.read_text())
        age = datetime.now(timezone.utc).date() - datetime.fromisoformat(info["report"]["end_date"]).date()
        if info.get("request") == asdict(request) and age.days < MAX_AGE_DAYS:
            report = LoadReport(**{k: v for k, v in info["report"].items() if k in LoadReport.__dataclass_fields__})
            report.reused = True
            return path, report
    for stale in (path, described, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    building = path.with_suffix(".building")
    building.write_text(str(os.getpid()))
    engine = bulk_sqlite_engine(path)
    try:
        report = load(engine, request, progress=progress)
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    finally:
        engine.dispose()
        building.unlink(missing_ok=True)
    described.write_text(json.dumps({"request": asdict(request), "report": report.to_dict()}, indent=2))
    return path, report


def import_rate(database_url: str, rows: int = 50_000, seed: int = 99) -> dict[str, float]:
    """Rows/s of the product's import path (``shared.operations.import_history``) into an
    empty database, on a simulated history of ``rows`` transactions."""
    from shared.config import Settings
    from shared.operations import import_history
    from shared.simulator import simulate_for_volume
    from shared.storage.schema import create_schema
    from shared.wiring import Wiring

    frame = simulate_for_volume(rows, seed=seed, n_days=30, start_date=start_date(30))
    wiring = Wiring(Settings.from_env({"DATABASE_URL": database_url}))
    try:
        create_schema(wiring.engine)
        started = time.perf_counter()
        added, labeled = import_history(wiring, frame)
        seconds = time.perf_counter() - started
    finally:
        wiring.close()
    return {"rows": added, "labels": labeled, "seconds": round(seconds, 2), "rows_per_second": round(added / seconds)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.datasets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--hot-rows", type=int, default=0)
    args = parser.parse_args(argv)
    path, report = sqlite_history(Request(args.rows, days=args.days, hot_rows=args.hot_rows), progress=True)
    print(json.dumps({"path": str(path), **report.to_dict()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
