"""The SQL Server path, as far as it can be proven without a server."""
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy.dialects import mssql
from sqlalchemy.schema import CreateIndex, CreateTable

from shared.storage import db

PORTAL_ODBC = ("Driver={ODBC Driver 18 for SQL Server};Server=tcp:fraud-sql.database.windows.net,1433;"
               "Database=frauddb;Uid=fraudapp;Pwd={p@ss;word};Encrypt=yes;TrustServerCertificate=no;"
               "Connection Timeout=30;")
PORTAL_ADO = ("Server=tcp:fraud-sql.database.windows.net,1433;Initial Catalog=frauddb;Persist Security Info=False;"
              "User ID=fraudapp;Password=s3cret;MultipleActiveResultSets=False;Encrypt=True;"
              "TrustServerCertificate=False;Connection Timeout=30;")
MANAGED_IDENTITY = ("Server=tcp:fraud-sql.database.windows.net,1433;Database=frauddb;"
                    "Authentication=Active Directory Managed Identity;Encrypt=True;")


def odbc_pairs(text: str) -> dict[str, str]:
    return {k: v for k, v in db._split_connection_string(text)}


def test_portal_odbc_string_kept_with_driver_18():
    pairs = odbc_pairs(db.odbc_connection_string(PORTAL_ODBC))
    assert pairs["Driver"] == "{ODBC Driver 18 for SQL Server}"
    assert pairs["Pwd"] == "{p@ss;word}"  # braces protect the semicolon
    assert pairs["Server"] == "tcp:fraud-sql.database.windows.net,1433"
    assert pairs["Encrypt"] == "yes"


def test_ado_net_string_is_translated_to_odbc():
    pairs = odbc_pairs(db.odbc_connection_string(PORTAL_ADO))
    assert pairs["Driver"] == "{ODBC Driver 18 for SQL Server}"
    assert (pairs["Database"], pairs["Uid"], pairs["Pwd"]) == ("frauddb", "fraudapp", "s3cret")
    assert pairs["Encrypt"] == "yes" and pairs["TrustServerCertificate"] == "no"
    assert "Persist Security Info" not in pairs and "MultipleActiveResultSets" not in pairs


def test_managed_identity_maps_to_odbc_msi():
    pairs = odbc_pairs(db.odbc_connection_string(MANAGED_IDENTITY))
    assert pairs["Authentication"] == "ActiveDirectoryMsi" and "Pwd" not in pairs


def test_url_uses_mssql_pyodbc_and_wins_over_database_url():
    url = db.database_url("sqlite:///x.db", PORTAL_ODBC)
    assert url.startswith("mssql+pyodbc:///?odbc_connect=")
    odbc = parse_qs(urlsplit(url).query)["odbc_connect"][0]
    assert "ODBC Driver 18 for SQL Server" in odbc and "frauddb" in odbc
    assert db.database_url("sqlite:///x.db", "") == "sqlite:///x.db"


def test_missing_server_is_an_error():
    with pytest.raises(ValueError):
        db.odbc_connection_string("Database=x;Uid=y")


def test_password_never_shown_in_redacted_url():
    url = db.database_url("", PORTAL_ADO)
    assert "s3cret" not in db.redact_url(url)
    assert "hunter2" not in db.redact_url("postgresql+psycopg://u:hunter2@h/db")


def test_schema_compiles_to_tsql():
    dialect = mssql.dialect()
    ddl = "\n".join(str(CreateTable(t).compile(dialect=dialect)) for t in db.metadata.sorted_tables)
    assert "BIGINT NOT NULL IDENTITY" in ddl
    assert "DATETIME2" in ddl or "DATETIME" in ddl
    assert "BIT" in ddl and "VARCHAR(64)" in ddl
    assert "CONSTRAINT uq_transactions_transaction_id UNIQUE (transaction_id)" in ddl
    indexes = [str(CreateIndex(i).compile(dialect=dialect)) for i in db.transactions.indexes]
    assert any("(customer_id, timestamp)" in i for i in indexes)
    assert any("(terminal_id, timestamp)" in i for i in indexes)




def test_engine_for_sqlserver_uses_pyodbc_and_fast_executemany():
    pyodbc = pytest.importorskip("pyodbc", reason="pyodbc needs unixODBC (libodbc.so.2): apt-get install unixodbc")
    engine = db.create_db_engine(db.database_url("", PORTAL_ODBC))
    assert engine.dialect.name == "mssql" and engine.dialect.driver == "pyodbc"
    assert engine.dialect.fast_executemany is True
    assert pyodbc  # imported only on this path


def test_sqlite_default_does_not_import_pyodbc():
    import subprocess
    import sys

    code = ("import sys; from shared.storage import db; e = db.create_db_engine('sqlite://'); "
            "db.create_schema(e); print('pyodbc' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_history_query_compiles_for_sqlserver(monkeypatch):
    """The online feature query renders as valid T-SQL (compiled, not executed)."""
    from datetime import datetime, timezone

    from shared.features import DEFAULT_SPEC
    from shared.schema import Transaction

    statements = []

    class Connection:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def execute(self, statement, parameters=None):
            statements.append(str(statement.compile(dialect=mssql.dialect())))
            assert parameters["customer_id"] == "C" and parameters["terminal_id"] == "T"
            raise RuntimeError("compiled only")

    class Engine:
        def connect(self):
            return Connection()

    tx = Transaction("t1", datetime(2026, 1, 1, tzinfo=timezone.utc), "C", "T", 1.0)
    with pytest.raises(RuntimeError, match="compiled only"):
        db.history_aggregates(Engine(), tx, DEFAULT_SPEC)
    sql = statements[0]
    assert "LEFT OUTER JOIN labels" in sql and "customer_history" in sql and "terminal_history" in sql
    assert "[timestamp]" in sql or "timestamp" in sql
