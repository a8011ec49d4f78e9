"""The SQL Server path, as far as it can be proven without a server."""
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy.dialects import mssql
from sqlalchemy.schema import CreateIndex, CreateTable

from shared.storage import engines, schema, sqlserver

PORTAL_ODBC = ("Driver={ODBC Driver 18 for SQL Server};Server=tcp:fraud-sql.database.windows.net,1433;"
               "Database=frauddb;Uid=fraudapp;Pwd={p@ss;word};Encrypt=yes;TrustServerCertificate=no;"
               "Connection Timeout=30;")
PORTAL_ADO = ("Server=tcp:fraud-sql.database.windows.net,1433;Initial Catalog=frauddb;Persist Security Info=False;"
              "User ID=fraudapp;Password=s3cret;MultipleActiveResultSets=False;Encrypt=True;"
              "TrustServerCertificate=False;Connection Timeout=30;")
MANAGED_IDENTITY = ("Server=tcp:fraud-sql.database.windows.net,1433;Database=frauddb;"
                    "Authentication=Active Directory Managed Identity;Encrypt=True;")


def odbc_pairs(text: str) -> dict[str, str]:
    return {k: v for k, v in sqlserver._split_connection_string(text)}


def test_portal_odbc_string_kept_with_driver_18():
    pairs = odbc_pairs(sqlserver.odbc_connection_string(PORTAL_ODBC))
    assert pairs["Driver"] == "{ODBC Driver 18 for SQL Server}"
    assert pairs["Pwd"] == "{p@ss;word}"  # braces protect the semicolon
    assert pairs["Server"] == "tcp:fraud-sql.database.windows.net,1433"
    assert pairs["Encrypt"] == "yes"


def test_ado_net_string_is_translated_to_odbc():
    pairs = odbc_pairs(sqlserver.odbc_connection_string(PORTAL_ADO))
    assert pairs["Driver"] == "{ODBC Driver 18 for SQL Server}"
    assert (pairs["Database"], pairs["Uid"], pairs["Pwd"]) == ("frauddb", "fraudapp", "s3cret")
    assert pairs["Encrypt"] == "yes" and pairs["TrustServerCertificate"] == "no"
    assert "Persist Security Info" not in pairs and "MultipleActiveResultSets" not in pairs


def test_managed_identity_maps_to_odbc_msi():
    pairs = odbc_pairs(sqlserver.odbc_connection_string(MANAGED_IDENTITY))
    assert pairs["Authentication"] == "ActiveDirectoryMsi" and "Pwd" not in pairs


def test_url_uses_mssql_pyodbc_and_wins_over_database_url():
    url = engines.database_url("sqlite:///x.db", PORTAL_ODBC)
    assert url.startswith("mssql+pyodbc:///?odbc_connect=")
    odbc = parse_qs(urlsplit(url).query)["odbc_connect"][0]
    assert "ODBC Driver 18 for SQL Server" in odbc and "frauddb" in odbc
    assert engines.database_url("sqlite:///x.db", "") == "sqlite:///x.db"


def test_missing_server_is_an_error():
    with pytest.raises(ValueError):
        sqlserver.odbc_connection_string("Database=x;Uid=y")


def test_password_never_shown_in_redacted_url():
    url = engines.database_url("", PORTAL_ADO)
    assert "s3cret" not in engines.redact_url(url)
    assert "hunter2" not in engines.redact_url("postgresql+psycopg://u:hunter2@h/db")


def test_schema_compiles_to_tsql():
    dialect = mssql.dialect()
    ddl = "\n".join(str(CreateTable(t).compile(dialect=dialect)) for t in schema.metadata.sorted_tables)
    assert "BIGINT NOT NULL IDENTITY" in ddl
    assert "DATETIME2" in ddl or "DATETIME" in ddl
    assert "BIT" in ddl and "VARCHAR(64)" in ddl
    assert "CONSTRAINT uq_transactions_transaction_id UNIQUE (transaction_id)" in ddl
    assert "PRIMARY KEY (customer_id, hour)" in ddl and "PRIMARY KEY (terminal_id, day)" in ddl
    indexes = [str(CreateIndex(i).compile(dialect=dialect)) for i in schema.transactions.indexes]
    assert any("(customer_id, epoch_hour, timestamp) INCLUDE (amount)" in i for i in indexes)


def test_engine_for_sqlserver_uses_pyodbc_and_fast_executemany():
    pyodbc = pytest.importorskip("pyodbc", reason="pyodbc needs unixODBC (libodbc.so.2): apt-get install unixodbc")
    engine = engines.create_db_engine(engines.database_url("", PORTAL_ODBC))
    assert engine.dialect.name == "mssql" and engine.dialect.driver == "pyodbc"
    assert engine.dialect.fast_executemany is True
    assert pyodbc  # imported only on this path


def test_sqlite_default_does_not_import_pyodbc():
    import subprocess
    import sys

    code = ("import sys; from shared.storage import engines, schema; e = engines.create_db_engine('sqlite://'); "
            "schema.create_schema(e); print('pyodbc' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def tsql(statement) -> str:
    return str(statement.compile(dialect=mssql.dialect()))


def test_online_history_query_compiles_to_tsql():
    """The online feature query renders as T-SQL (compiled, not executed): bucket ranges
    by integer arithmetic, no dialect date functions, no window frames."""
    from shared.features import DEFAULT_SPEC
    from shared.storage.history import history_statement

    sql = tsql(history_statement(DEFAULT_SPEC))
    assert "customer_buckets AS cb" in sql and "terminal_buckets AS tb" in sql and "transactions AS r" in sql
    assert "BETWEEN" in sql and "OVER" not in sql and "RANGE" not in sql


def test_training_queries_compile_to_tsql():
    """The batch feature queries and the chunked row query render as T-SQL (TOP, GROUP BY)."""
    from datetime import datetime, timezone

    from shared.features import DEFAULT_SPEC
    from shared.storage.training_data import Population, SamplePlan, TrainingData, aggregate_statements, rows_statement

    data = TrainingData(engine=None)
    x, label_row = schema.transactions.alias("x"), schema.labels.alias("l")
    plan = SamplePlan(Population(datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 4, 1, tzinfo=timezone.utc),
                                 unlabeled_genuine_before=datetime(2026, 3, 1, tzinfo=timezone.utc)), 1.0, 0.25)
    selection = data._in_sample(plan, x, label_row)
    rows = tsql(rows_statement(x, label_row, selection, 1000, 20_000))
    assert "TOP" in rows and "ORDER BY x.id" in rows and "sample_key <=" in rows
    for statement in aggregate_statements(DEFAULT_SPEC.aggregates(), x, label_row, x.c.id.between(1, 2)):
        sql = tsql(statement)
        assert "GROUP BY x.id" in sql and "LEFT OUTER JOIN" in sql


def test_bucket_and_label_writes_compile_to_tsql():
    """The SQL Server write path (no ON CONFLICT): the label flip returns the changed rows
    with OUTPUT inserted.*, and bucket upserts are plain UPDATE/INSERT."""
    import sqlalchemy as sa

    from shared.storage.aggregates import rebuild_buckets

    t = schema.transactions.c
    flip = (schema.transactions.update().where(t.transaction_id.in_(["a"]), t.fraud_counted == sa.false())
            .values(fraud_counted=True).returning(t.terminal_id, t.epoch_hour))
    assert "OUTPUT inserted.terminal_id, inserted.epoch_hour" in tsql(flip)
    statements = []
    # A mock engine compiles every statement rebuild_buckets issues for SQL Server.
    rebuild_buckets(sa.create_mock_engine("mssql+pyodbc://", lambda sql, *a, **k: statements.append(tsql(sql))))
    assert any("INSERT INTO customer_buckets" in s and "GROUP BY" in s for s in statements)
    assert any("epoch_hour / " in s for s in statements)


def test_active_directory_default_connects_with_an_entra_token(monkeypatch):
    """Operators (az login) and the app (managed identity) alike: "Active Directory Default"
    becomes an access token from DefaultAzureCredential, passed as SQL_COPT_SS_ACCESS_TOKEN;
    the Authentication keyword, which the driver refuses beside a token, is dropped."""
    import struct

    pytest.importorskip("pyodbc", reason="pyodbc needs unixODBC (libodbc.so.2): apt-get install unixodbc")
    asked = []

    class Credential:
        def get_token(self, scope):
            asked.append(scope)
            return type("Token", (), {"token": "eyJ-token"})()

    monkeypatch.setattr("azure.identity.DefaultAzureCredential", Credential)
    ado = ("Server=tcp:fraud-sql.database.windows.net,1433;Initial Catalog=fraud;"
           "Authentication=Active Directory Default;Encrypt=True;")
    engine = engines.create_db_engine(engines.database_url("", ado))
    odbc = engine.url.query["odbc_connect"]
    assert "Authentication" not in odbc and "Server=tcp:fraud-sql.database.windows.net,1433" in odbc
    cparams: dict = {}
    for listener in engine.dialect.dispatch.do_connect:
        listener(engine.dialect, None, [], cparams)
    raw = "eyJ-token".encode("utf-16-le")
    assert cparams["attrs_before"] == {1256: struct.pack(f"<I{len(raw)}s", len(raw), raw)}
    assert asked == ["https://database.windows.net/.default"]
    # Managed identity by name keeps the driver's own mode (no token needed).
    assert "ActiveDirectoryMsi" in engines.create_db_engine(engines.database_url("", MANAGED_IDENTITY)) \
        .url.query["odbc_connect"]
