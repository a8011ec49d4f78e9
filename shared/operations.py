"""Operator tasks behind the CLI: history import, simulated traffic, database status."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .schema import Label, Transaction
from .storage.engines import redact_url, utcnow
from .storage.schema import create_schema
from .storage.transactions import transaction_row

if TYPE_CHECKING:
    import pandas as pd

    from .wiring import Wiring

CSV_COLUMNS = ("transaction_id", "timestamp", "customer_id", "terminal_id", "amount", "label")
IMPORT_CHUNK_ROWS = 50_000
IMPORT_SOURCE = "import"


def read_transactions_csv(path: str) -> pd.DataFrame:
    """Read a labeled history CSV; timestamps without an offset are UTC."""
    import pandas as pd

    frame = pd.read_csv(path, dtype={"transaction_id": str, "customer_id": str, "terminal_id": str})
    missing = [c for c in CSV_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {','.join(CSV_COLUMNS)}")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    frame["amount"] = frame["amount"].astype("float64")
    frame["label"] = pd.to_numeric(frame["label"], errors="coerce")
    return frame


def import_history(wiring: Wiring, frame: pd.DataFrame,
                   on_chunk: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Bulk-load transactions and their labels (where present); idempotent.

    Labels go first, so each transaction is counted in its buckets with its label as it is
    stored. Returns (new transactions, labels stored).
    """
    import numpy as np
    import pandas as pd

    persisted_at = utcnow()
    ids = frame["transaction_id"].astype(str).to_numpy()
    timestamps = pd.to_datetime(frame["timestamp"], utc=True).dt.tz_localize(None).dt.to_pydatetime()
    customers = frame["customer_id"].astype(str).to_numpy()
    terminals = frame["terminal_id"].astype(str).to_numpy()
    amounts = frame["amount"].astype(float).to_numpy()
    labels = pd.to_numeric(frame["label"], errors="coerce").to_numpy() if "label" in frame else np.full(len(frame),
                                                                                                          np.nan)
    added = labeled = 0
    for start in range(0, len(frame), IMPORT_CHUNK_ROWS):
        part = slice(start, start + IMPORT_CHUNK_ROWS)
        known = ~np.isnan(labels[part])
        batch = [Label(i, bool(v == 1)) for i, v in zip(ids[part][known], labels[part][known])]
        if batch:
            labeled += wiring.labels.record(batch, source=IMPORT_SOURCE, key_id="cli")
        rows = [transaction_row(i, t, c, m, a, persisted_at)
                for i, t, c, m, a in zip(ids[part], timestamps[part], customers[part], terminals[part], amounts[part])]
        added += wiring.transactions.add_rows(rows).inserted
        if on_chunk is not None:
            on_chunk(len(rows))
    return added, labeled


def enqueue_labeled(wiring: Wiring, frame: pd.DataFrame) -> dict[str, int]:
    """Score and enqueue simulated transactions as the predict function would, and record
    their true labels (source ``simulator``)."""
    from .errors import EnqueueFailed

    scored = failed = flagged = 0
    labels: list[Label] = []
    for row in frame.itertuples(index=False):
        transaction = Transaction(row.transaction_id, row.timestamp.to_pydatetime(), row.customer_id,
                                  row.terminal_id, float(row.amount))
        try:
            prediction = wiring.scoring.score(transaction)
        except EnqueueFailed:
            failed += 1
            continue
        scored += 1
        flagged += prediction.scored.is_fraud
        labels.append(Label(row.transaction_id, bool(row.label)))
    wiring.labels.record(labels, source="simulator", key_id="cli")
    return {"enqueued": scored, "failed": failed, "flagged": flagged, "labels": len(labels),
            "true_frauds": int(frame["label"].sum())}


def table_counts(wiring: Wiring) -> dict[str, int]:
    import sqlalchemy as sa

    from .storage.schema import customer_buckets, label_events, labels, terminal_buckets, training_runs, transactions

    with wiring.engine.connect() as conn:
        return {table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                for table in (transactions, labels, label_events, training_runs, customer_buckets, terminal_buckets)}


def database_status(wiring: Wiring) -> dict[str, Any]:
    """What db-check reports: dialect, server version, driver, row counts — or why not."""
    import sqlalchemy as sa

    status: dict[str, Any] = {"url": redact_url(wiring.database_url), "reachable": False}
    try:
        engine = wiring.engine
        status["dialect"] = engine.dialect.name
        status["driver"] = engine.dialect.driver
        with engine.connect() as conn:
            status["server_version"] = ".".join(map(str, engine.dialect.server_version_info or ()))
            conn.execute(sa.text("SELECT 1"))
        status["reachable"] = True
        create_schema(engine)
        status["row_counts"] = table_counts(wiring)
    except Exception as exc:  # report, don't crash: this is the diagnostic command
        status["error"] = f"{type(exc).__name__}: {_first_line(exc)}"
    return status


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0][:500] if text.strip() else type(exc).__name__
