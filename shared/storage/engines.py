"""Database engines and the few dialect differences the stores need.

One code path for SQLite (embedded local default), SQL Server (production, via
``mssql+pyodbc`` and "ODBC Driver 18 for SQL Server") and PostgreSQL.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote_plus

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from .sqlserver import access_token_attribute, odbc_connection_string, without_token_authentication

log = logging.getLogger(__name__)


def naive_utc(value: datetime) -> datetime:
    """Timezone-aware → naive UTC, the form stored in every dialect."""
    if value.tzinfo is None:
        return value
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def database_url(database_url: str, sql_connection_string: str = "") -> str:
    """The SQLAlchemy URL: SQL_CONNECTION_STRING (SQL Server) wins over DATABASE_URL."""
    if sql_connection_string:
        return "mssql+pyodbc:///?odbc_connect=" + quote_plus(odbc_connection_string(sql_connection_string))
    return database_url


def redact_url(url: str) -> str:
    """The URL with any password hidden, for logs and error messages (every form: see
    :mod:`shared.redaction`; make_url misreads a password with an unencoded ``@``)."""
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
_sqlite_write_locks: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()


def write_turn(engine: Engine) -> Any:
    """A context manager that serialises this process's writers where the database needs it."""
    lock = _sqlite_write_locks.get(engine)
    return lock if lock is not None else contextlib.nullcontext()


CONNECT_TIMEOUT_SECONDS = 5  # a silent server must not hold a caller for the driver's default minutes


def create_db_engine(url: str, statement_timeout_ms: int | None = None, pool_size: int | None = None) -> Engine:
    """An Engine with the right options for each dialect.

    ``statement_timeout_ms`` makes the server itself cancel longer statements where the
    dialect allows it (PostgreSQL ``statement_timeout``; SQL Server's query timeout, whole
    seconds); see :class:`CancellableQuery` for the rest.
    """
    parsed = sa.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        # A pool as large as the threads that use it (HTTP workers, queue batch, history),
        # so connections are reused instead of opened and closed per call.
        in_memory = parsed.database in (None, "", ":memory:")
        pool = {} if in_memory else {"pool_size": pool_size or 32, "max_overflow": 32}
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                                  hide_parameters=True, **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        _sqlite_write_locks[engine] = threading.Lock()
        return engine
    # hide_parameters: a failing statement's error (which the host logs) must not carry
    # customer data or amounts.
    options: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    if pool_size:
        options.update(pool_size=pool_size, max_overflow=pool_size)
    connect_args: dict[str, Any] = {}
    # Reads under a deadline connect under a short one too.
    connect_seconds = 2 if statement_timeout_ms else CONNECT_TIMEOUT_SECONDS
    if backend == "postgresql":
        connect_args["connect_timeout"] = connect_seconds
        if statement_timeout_ms:
            connect_args["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
    if backend == "mssql":
        connect_args["timeout"] = connect_seconds  # pyodbc: the login timeout
        # pyodbc is imported here only, by the dialect: the SQLite default never needs unixODBC.
        options["fast_executemany"] = True
    token_credential = None
    if backend == "mssql":
        odbc = parsed.query.get("odbc_connect")
        if isinstance(odbc, str):
            stripped, token_credential = without_token_authentication(odbc)
            if token_credential:
                url = parsed.update_query_dict({"odbc_connect": stripped}).render_as_string(hide_password=False)
    engine = sa.create_engine(url, connect_args=connect_args, **options)
    if token_credential:
        _use_entra_token(engine)
    if backend == "mssql" and statement_timeout_ms:
        seconds = max(1, -(-int(statement_timeout_ms) // 1000))

        @event.listens_for(engine, "connect")
        def _query_timeout(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.timeout = seconds  # pyodbc: SQL_ATTR_QUERY_TIMEOUT, in seconds
    return engine


SQL_TOKEN_SCOPE = "https://database.windows.net/.default"


def _use_entra_token(engine: Engine, credential: Any = None) -> None:
    """Connect with an Entra access token from DefaultAzureCredential (the managed identity in
    Azure, the Azure CLI login on an operator's machine), fetched per new connection (the
    credential caches it until shortly before it expires)."""
    state: dict[str, Any] = {"credential": credential}

    @event.listens_for(engine, "do_connect")
    def _token(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        if state["credential"] is None:
            from azure.identity import DefaultAzureCredential

            state["credential"] = DefaultAzureCredential()
        token = state["credential"].get_token(SQL_TOKEN_SCOPE).token
        cparams["attrs_before"] = {**cparams.get("attrs_before", {}), **access_token_attribute(token)}


class CancellableQuery:
    """Lets another thread cancel one statement while it runs, on the server.

    The reading thread executes with ``execution_options(cancellable=this)``; the engine
    event records the connection and cursor. :meth:`cancel` interrupts SQLite
    (``sqlite3.Connection.interrupt``) and SQL Server (``pyodbc.Cursor.cancel``, SQLCancel);
    PostgreSQL's history engine has ``statement_timeout`` instead, enforced by the server.
    Cancelling after the statement finished does nothing, so a pooled connection's next
    statement is never hit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancel: Callable[[], None] | None = None
        self.cancelled = False

    def started(self, dialect: str, dbapi_connection: Any, cursor: Any) -> None:
        with self._lock:
            if dialect == "sqlite":
                self._cancel = dbapi_connection.interrupt
            elif dialect == "mssql":
                self._cancel = cursor.cancel

    def finished(self) -> None:
        with self._lock:
            self._cancel = None

    def cancel(self) -> None:
        with self._lock:
            if self._cancel is not None:
                self.cancelled = True
                try:
                    self._cancel()
                except Exception:  # the statement may just have ended; nothing to cancel
                    log.debug("cancel failed", exc_info=True)
                self._cancel = None


@event.listens_for(Engine, "before_cursor_execute")
def _record_cancellable(conn: sa.Connection, cursor: Any, statement: str, parameters: Any, context: Any,
                        executemany: bool) -> None:
    cancellable = conn.get_execution_options().get("cancellable")
    if cancellable is not None:
        cancellable.started(conn.dialect.name, conn.connection.dbapi_connection, cursor)


# --- idempotent writes --------------------------------------------------------------------


def upsert_constructor(engine: Engine | sa.Connection) -> Callable[[sa.Table], Any] | None:
    """The dialect's ``INSERT ... ON CONFLICT`` constructor, where SQLAlchemy has one."""
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    return None  # SQL Server has no ON CONFLICT


def with_race_retry(engine: Engine, write: Callable[[sa.Connection], Any], attempts: int = 3) -> Any:
    """Run a check-then-write transaction, retrying when a concurrent writer inserted one of
    the same keys between our check and our write (the unique key turns that into an error)."""
    for attempt in range(attempts):
        try:
            with write_turn(engine), engine.begin() as conn:
                return write(conn)
        except IntegrityError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
