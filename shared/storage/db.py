"""The database: schema and the few statements the service needs, via SQLAlchemy Core.

One code path for SQLite (embedded local default), SQL Server (production, via
``mssql+pyodbc`` and "ODBC Driver 18 for SQL Server") and PostgreSQL. Timestamps
are stored as naive UTC (SQL Server's DATETIME2 has no zone).
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence
from urllib.parse import quote_plus

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from ..schema import Label, ScoredTransaction, Transaction

if TYPE_CHECKING:
    import pandas as pd

    from ..features import FeatureSpec

log = logging.getLogger(__name__)

ODBC_DRIVER = "ODBC Driver 18 for SQL Server"

metadata = sa.MetaData()

# BIGINT keys on servers; SQLite only auto-increments an INTEGER PRIMARY KEY.
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

transactions = sa.Table(
    "transactions",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("transaction_id", sa.String(64), nullable=False),
    sa.Column("timestamp", sa.DateTime(), nullable=False),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("terminal_id", sa.String(64), nullable=False),
    sa.Column("amount", sa.Float(), nullable=False),
    # The model's verdict at scoring time (NULL for imported history never scored online).
    sa.Column("fraud_probability", sa.Float(), nullable=True),
    sa.Column("predicted_fraud", sa.Boolean(), nullable=True),
    sa.Column("model_version", sa.String(64), nullable=True),
    sa.Column("scored_at", sa.DateTime(), nullable=True),
    sa.Column("degraded", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("persisted_at", sa.DateTime(), nullable=False),
    sa.UniqueConstraint("transaction_id", name="uq_transactions_transaction_id"),
)
sa.Index("ix_transactions_customer_time", transactions.c.customer_id, transactions.c.timestamp)
sa.Index("ix_transactions_terminal_time", transactions.c.terminal_id, transactions.c.timestamp)
sa.Index("ix_transactions_time", transactions.c.timestamp)

# True outcomes live apart from predictions, keyed by transaction_id, so a label that
# arrives before its transaction is persisted is kept and joins up later.
labels = sa.Table(
    "labels",
    metadata,
    sa.Column("transaction_id", sa.String(64), primary_key=True),
    sa.Column("is_fraud", sa.Boolean(), nullable=False),
    sa.Column("labeled_at", sa.DateTime(), nullable=False),
)

training_runs = sa.Table(
    "training_runs",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("started_at", sa.DateTime(), nullable=False),
    sa.Column("finished_at", sa.DateTime(), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # skipped | promoted | rejected | failed
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("labeled_count", sa.Integer(), nullable=False),
    sa.Column("new_labels", sa.Integer(), nullable=False),
    sa.Column("training_rows", sa.Integer(), nullable=True),
    sa.Column("holdout_rows", sa.Integer(), nullable=True),
    sa.Column("model_version", sa.String(64), nullable=True),
    sa.Column("champion_version", sa.String(64), nullable=True),
    sa.Column("metrics", sa.Text(), nullable=True),
    sa.Column("champion_metrics", sa.Text(), nullable=True),
)

RUN_STATUSES = ("skipped", "promoted", "rejected", "failed")
TRAINED_STATUSES = ("promoted", "rejected")


def naive_utc(value: datetime) -> datetime:
    """Timezone-aware → naive UTC, the form stored in every dialect."""
    if value.tzinfo is None:
        return value
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


# --- connection -----------------------------------------------------------------------

_ADO_TO_ODBC = {
    "server": "Server", "data source": "Server", "address": "Server", "addr": "Server",
    "initial catalog": "Database", "database": "Database",
    "user id": "Uid", "uid": "Uid", "user": "Uid",
    "password": "Pwd", "pwd": "Pwd",
    "encrypt": "Encrypt", "trustservercertificate": "TrustServerCertificate",
    "connection timeout": "Connection Timeout", "connect timeout": "Connection Timeout",
    "authentication": "Authentication", "driver": "Driver",
    "hostnameincertificate": "HostNameInCertificate",
}
# ADO.NET-only keys the ODBC driver does not understand.
_ADO_ONLY = {"persist security info", "multipleactiveresultsets", "pooling", "application name"}
_AUTH_ADO_TO_ODBC = {
    "active directory default": "ActiveDirectoryMsi",
    "active directory managed identity": "ActiveDirectoryMsi",
    "active directory msi": "ActiveDirectoryMsi",
    "active directory password": "ActiveDirectoryPassword",
    "active directory service principal": "ActiveDirectoryServicePrincipal",
    "active directory interactive": "ActiveDirectoryInteractive",
}


def _split_connection_string(text: str) -> list[tuple[str, str]]:
    """Split ``k=v;k={v;with;semicolons}`` pairs, keeping braces around values."""
    pairs = []
    for match in re.finditer(r"\s*([^=;]+?)\s*=\s*(\{(?:[^}]|\}\})*\}|[^;]*)\s*(?:;|$)", text):
        pairs.append((match.group(1), match.group(2)))
    return pairs


def odbc_connection_string(text: str) -> str:
    """Normalise a SQL Server connection string (ODBC or ADO.NET form, as the Azure portal
    gives it) into an ODBC string for "ODBC Driver 18 for SQL Server"."""
    out: dict[str, str] = {}
    for key, value in _split_connection_string(text):
        lowered = key.strip().lower()
        if lowered in _ADO_ONLY:
            continue
        name = _ADO_TO_ODBC.get(lowered, key.strip())
        if name == "Authentication":
            value = _AUTH_ADO_TO_ODBC.get(value.strip().lower(), value)
        if name == "Encrypt" and value.strip().lower() in {"true", "mandatory"}:
            value = "yes"
        if name == "Encrypt" and value.strip().lower() in {"false", "optional"}:
            value = "no"
        if name == "TrustServerCertificate":
            value = {"true": "yes", "false": "no"}.get(value.strip().lower(), value)
        out[name] = value
    if "Server" not in out:
        raise ValueError("SQL Server connection string has no Server")
    out.setdefault("Driver", "{" + ODBC_DRIVER + "}")
    if not out["Driver"].startswith("{"):
        out["Driver"] = "{" + out["Driver"] + "}"
    out.setdefault("Encrypt", "yes")
    ordered = ["Driver"] + [k for k in out if k != "Driver"]
    return ";".join(f"{k}={out[k]}" for k in ordered) + ";"


def database_url(database_url: str, sql_connection_string: str = "") -> str:
    """The SQLAlchemy URL: SQL_CONNECTION_STRING (SQL Server) wins over DATABASE_URL."""
    if sql_connection_string:
        return "mssql+pyodbc:///?odbc_connect=" + quote_plus(odbc_connection_string(sql_connection_string))
    return database_url


def redact_url(url: str) -> str:
    """The URL with any password hidden, for logs and error messages (every form:
    see :mod:`shared.redaction`; make_url misreads a password with an unencoded ``@``)."""
    from ..redaction import redact_url as redact

    return redact(url)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the predict function read history while persist writes (and it is stored in
    # the file, so only the first connection changes anything); busy_timeout makes writers
    # of other processes wait instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# SQLite has a single writer. Writers of one process take turns on a mutex instead of
# polling the file lock with busy_timeout's growing sleeps (which throttled persist to a
# crawl with 16 queue messages in flight).
_sqlite_write_locks: "weakref.WeakKeyDictionary[Engine, threading.Lock]" = weakref.WeakKeyDictionary()


def _write_turn(engine: Engine) -> Any:
    lock = _sqlite_write_locks.get(engine)
    return lock if lock is not None else contextlib.nullcontext()


def create_db_engine(url: str) -> Engine:
    """An Engine with the right options for each dialect."""
    parsed = sa.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        # A pool as large as the threads that use it (HTTP workers, queue batch, history),
        # so connections are reused instead of opened and closed per call.
        in_memory = parsed.database in (None, "", ":memory:")
        pool = {} if in_memory else {"pool_size": 32, "max_overflow": 32}
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                                  hide_parameters=True, **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        _sqlite_write_locks[engine] = threading.Lock()
        return engine
    # hide_parameters: a failing statement's error (which the host logs) must not carry
    # customer data or amounts.
    options: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    if backend == "mssql":
        # pyodbc is imported here only, by the dialect: the SQLite default never needs unixODBC.
        options["fast_executemany"] = True
    return sa.create_engine(url, **options)


def create_schema(engine: Engine) -> None:
    """Create tables and indexes that are missing (safe to run any number of times)."""
    metadata.create_all(engine, checkfirst=True)


# --- writes ---------------------------------------------------------------------------


def _transaction_row(scored: ScoredTransaction, persisted_at: datetime) -> dict[str, Any]:
    tx = scored.transaction
    return {
        "transaction_id": tx.transaction_id,
        "timestamp": naive_utc(tx.timestamp),
        "customer_id": tx.customer_id,
        "terminal_id": tx.terminal_id,
        "amount": tx.amount,
        "fraud_probability": scored.fraud_probability,
        "predicted_fraud": scored.is_fraud,
        "model_version": scored.model_version,
        "scored_at": naive_utc(scored.scored_at),
        "degraded": scored.degraded,
        "persisted_at": persisted_at,
    }


def _existing_ids(conn: sa.Connection, table: sa.Table, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    column = table.c.transaction_id
    for start in range(0, len(ids), 500):  # stay under every dialect's parameter limit
        chunk = ids[start:start + 500]
        found.update(conn.execute(sa.select(column).where(column.in_(chunk))).scalars())
    return found


def _upsert_constructor(engine: Engine) -> Callable[[sa.Table], Any] | None:
    """The dialect's ``INSERT ... ON CONFLICT`` constructor, where SQLAlchemy has one."""
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # SQL Server has no ON CONFLICT
        return None
    return insert


def _with_race_retry(engine: Engine, write: Callable[[sa.Connection], int]) -> int:
    """Run a check-then-write transaction, retrying when a concurrent writer inserted one of
    the same keys between our check and our write (the unique key turns that into an error)."""
    for attempt in range(3):
        try:
            with engine.begin() as conn:
                return write(conn)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def insert_new_rows(engine: Engine, table: sa.Table, rows: list[dict[str, Any]]) -> int:
    """Insert rows whose ``transaction_id`` is not stored yet; return how many were new.

    Duplicates (redelivered messages, re-imports) are skipped, not errors. SQLite and
    PostgreSQL use ``ON CONFLICT DO NOTHING``; elsewhere (SQL Server) existing ids are
    filtered first and a lost race with a concurrent writer is retried.
    """
    if not rows:
        return 0
    upsert = _upsert_constructor(engine)
    if upsert is not None:
        statement = (upsert(table).on_conflict_do_nothing(index_elements=["transaction_id"])
                     .returning(table.c.transaction_id))
        with _write_turn(engine), engine.begin() as conn:
            # RETURNING (also with executemany) yields exactly the rows that were inserted.
            return len(conn.execute(statement, rows[0] if len(rows) == 1 else rows).all())

    def write(conn: sa.Connection) -> int:
        present = _existing_ids(conn, table, [r["transaction_id"] for r in rows])
        fresh = [r for r in rows if r["transaction_id"] not in present]
        if fresh:
            conn.execute(sa.insert(table), fresh)
        return len(fresh)

    return _with_race_retry(engine, write)


def insert_scored_transactions(engine: Engine, batch: Sequence[ScoredTransaction]) -> int:
    """Persist scored transactions in one database transaction; return how many were new."""
    persisted_at = utcnow()
    return insert_new_rows(engine, transactions, [_transaction_row(scored, persisted_at) for scored in batch])


def insert_scored_transaction(engine: Engine, scored: ScoredTransaction) -> bool:
    """Persist one scored transaction; False when it was already stored (a redelivery)."""
    return insert_scored_transactions(engine, [scored]) == 1


def upsert_labels(engine: Engine, batch: Iterable[Label], labeled_at: datetime | None = None) -> int:
    """Store true labels (a later label for the same transaction replaces the earlier one)."""
    labeled_at = naive_utc(labeled_at) if labeled_at else utcnow()
    latest = {label.transaction_id: label.is_fraud for label in batch}  # last one in a batch wins
    rows = [{"transaction_id": k, "is_fraud": v, "labeled_at": labeled_at} for k, v in latest.items()]
    if not rows:
        return 0
    upsert = _upsert_constructor(engine)
    if upsert is not None:
        statement = upsert(labels)
        statement = statement.on_conflict_do_update(
            index_elements=["transaction_id"],
            set_={"is_fraud": statement.excluded.is_fraud, "labeled_at": statement.excluded.labeled_at},
        )
        with _write_turn(engine), engine.begin() as conn:
            conn.execute(statement, rows)
        return len(rows)

    def write(conn: sa.Connection) -> int:
        present = _existing_ids(conn, labels, list(latest))
        updates = [{"key": r["transaction_id"], "is_fraud": r["is_fraud"], "labeled_at": r["labeled_at"]}
                   for r in rows if r["transaction_id"] in present]
        inserts = [r for r in rows if r["transaction_id"] not in present]
        if updates:
            conn.execute(labels.update().where(labels.c.transaction_id == sa.bindparam("key"))
                         .values(is_fraud=sa.bindparam("is_fraud"), labeled_at=sa.bindparam("labeled_at")),
                         updates)
        if inserts:
            conn.execute(sa.insert(labels), inserts)
        return len(rows)

    return _with_race_retry(engine, write)


# --- reads ----------------------------------------------------------------------------


def count_labeled_transactions(engine: Engine) -> int:
    """Persisted transactions that carry a true label (labels for unknown ids don't count)."""
    query = sa.select(sa.func.count()).select_from(
        transactions.join(labels, labels.c.transaction_id == transactions.c.transaction_id)
    )
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def fetch_transaction(engine: Engine, transaction_id: str) -> dict[str, Any] | None:
    query = sa.select(transactions, labels.c.is_fraud.label("label")).select_from(
        transactions.outerjoin(labels, labels.c.transaction_id == transactions.c.transaction_id)
    ).where(transactions.c.transaction_id == transaction_id)
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (transactions, labels, training_runs)
        }


# --- training runs --------------------------------------------------------------------


@dataclass
class TrainingRun:
    """One retraining attempt, whatever its outcome."""

    started_at: datetime
    trigger: str
    status: str = "failed"
    reason: str = ""
    labeled_count: int = 0
    new_labels: int = 0
    training_rows: int | None = None
    holdout_rows: int | None = None
    model_version: str | None = None
    champion_version: str | None = None
    metrics: dict[str, Any] | None = None
    champion_metrics: dict[str, Any] | None = None
    finished_at: datetime | None = None


def record_training_run(engine: Engine, run: TrainingRun) -> int:
    if run.status not in RUN_STATUSES:
        raise ValueError(f"unknown training run status {run.status!r}")
    row = {
        "started_at": naive_utc(run.started_at),
        "finished_at": naive_utc(run.finished_at or datetime.now(timezone.utc)),
        "trigger": run.trigger,
        "status": run.status,
        "reason": run.reason[:4000],
        "labeled_count": run.labeled_count,
        "new_labels": run.new_labels,
        "training_rows": run.training_rows,
        "holdout_rows": run.holdout_rows,
        "model_version": run.model_version,
        "champion_version": run.champion_version,
        "metrics": json.dumps(run.metrics) if run.metrics is not None else None,
        "champion_metrics": json.dumps(run.champion_metrics) if run.champion_metrics is not None else None,
    }
    with engine.begin() as conn:
        return conn.execute(sa.insert(training_runs).values(**row)).inserted_primary_key[0]


def labeled_count_at_last_training(engine: Engine) -> int:
    """The labeled-transaction count the last run that actually trained saw (0 if none)."""
    query = (
        sa.select(training_runs.c.labeled_count)
        .where(training_runs.c.status.in_(TRAINED_STATUSES))
        .order_by(training_runs.c.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        return conn.execute(query).scalar() or 0


def list_training_runs(engine: Engine, limit: int = 20) -> list[dict[str, Any]]:
    query = sa.select(training_runs).order_by(training_runs.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    for row in rows:
        for key in ("metrics", "champion_metrics"):
            row[key] = json.loads(row[key]) if row[key] else None
    return rows


# --- feature history (the online path of shared.features) ------------------------------


@functools.lru_cache(maxsize=8)
def _history_statement(spec: "FeatureSpec") -> sa.Select:
    """The online feature query for ``spec``, built once; per call only parameters change."""
    from ..features import customer_aggregate_keys, terminal_aggregate_keys

    t = transactions.c
    timestamp = sa.bindparam("timestamp", type_=sa.DateTime())
    customer_columns = []
    for n in spec.customer_windows:
        count_key, sum_key = customer_aggregate_keys(n)
        in_window = t.timestamp > sa.bindparam(f"customer_start_{n}d", type_=sa.DateTime())
        customer_columns += [
            sa.func.coalesce(sa.func.sum(sa.case((in_window, 1), else_=0)), 0).label(count_key),
            sa.func.coalesce(sa.func.sum(sa.case((in_window, t.amount), else_=0.0)), 0.0).label(sum_key),
        ]
    customer = sa.select(*customer_columns).where(
        t.customer_id == sa.bindparam("customer_id", type_=sa.String()),
        t.timestamp > sa.bindparam(f"customer_start_{max(spec.customer_windows)}d", type_=sa.DateTime()),
        sa.or_(t.timestamp < timestamp,
               sa.and_(t.timestamp == timestamp,
                       t.transaction_id < sa.bindparam("transaction_id", type_=sa.String()))),
    ).subquery("customer_history")

    terminal_columns = []
    for n in spec.terminal_windows:
        count_key, frauds_key = terminal_aggregate_keys(n)
        in_window = t.timestamp > sa.bindparam(f"terminal_start_{n}d", type_=sa.DateTime())
        terminal_columns += [
            sa.func.coalesce(sa.func.sum(sa.case((in_window, 1), else_=0)), 0).label(count_key),
            sa.func.coalesce(sa.func.sum(
                sa.case((sa.and_(in_window, labels.c.is_fraud == sa.true()), 1), else_=0)), 0).label(frauds_key),
        ]
    terminal = (
        sa.select(*terminal_columns)
        .select_from(transactions.outerjoin(labels, labels.c.transaction_id == t.transaction_id))
        .where(
            t.terminal_id == sa.bindparam("terminal_id", type_=sa.String()),
            t.timestamp > sa.bindparam(f"terminal_start_{max(spec.terminal_windows)}d", type_=sa.DateTime()),
            t.timestamp <= sa.bindparam("terminal_end", type_=sa.DateTime()),
        )
    ).subquery("terminal_history")
    # Two one-row aggregates side by side: a deliberate cross join.
    return sa.select(customer, terminal).select_from(customer.join(terminal, sa.true()))


def history_aggregates(engine: Engine, transaction: Transaction, spec: "FeatureSpec") -> dict[str, float]:
    """Window aggregates of the stored history before ``transaction``, in one indexed query.

    Mirrors :func:`shared.features.compute_features`: customer rows in (t - n, t] that come
    before the transaction in (timestamp, transaction_id) order; terminal rows in the
    delayed windows (t - d - n, t - d], with their true labels.
    """
    from ..features import online_window_bounds

    timestamp = naive_utc(transaction.timestamp)
    parameters = {
        "timestamp": timestamp,
        "customer_id": transaction.customer_id,
        "terminal_id": transaction.terminal_id,
        "transaction_id": transaction.transaction_id,
        **online_window_bounds(timestamp, spec),
    }
    with engine.connect() as conn:
        row = conn.execute(_history_statement(spec), parameters).mappings().one()
    return {key: float(value) for key, value in row.items()}


def load_history(engine: Engine, since: datetime | None = None) -> "pd.DataFrame":
    """All transactions (optionally from ``since``) with their true label (NaN if unknown)."""
    import pandas as pd

    t = transactions.c
    query = sa.select(
        t.transaction_id, t.timestamp, t.customer_id, t.terminal_id, t.amount,
        sa.case((labels.c.is_fraud.is_(None), None), (labels.c.is_fraud == sa.true(), 1), else_=0).label("label"),
    ).select_from(transactions.outerjoin(labels, labels.c.transaction_id == t.transaction_id))
    if since is not None:
        query = query.where(t.timestamp >= naive_utc(since))
    with engine.connect() as conn:
        frame = pd.read_sql(query, conn)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["label"] = pd.to_numeric(frame["label"], errors="coerce")
    frame["amount"] = frame["amount"].astype("float64")
    return frame
