"""The database schema (SQLAlchemy Core), one definition for SQLite, PostgreSQL and SQL Server.

Timestamps are stored as naive UTC (SQL Server's DATETIME2 has no zone). Besides the raw
transactions, the database keeps the per-bucket aggregates the feature windows are made
of (see :mod:`shared.features`): ``customer_buckets`` (card × UTC hour) and
``terminal_buckets`` (terminal × UTC day), so reading a window costs a bounded number of
rows whatever the volume of one card or merchant.
"""
from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.engine import Engine

SCHEMA_VERSION = 2

metadata = sa.MetaData()

# BIGINT keys on servers; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ID_LENGTH = 64
MODEL_VERSION_LENGTH = 64

transactions = sa.Table(
    "transactions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("transaction_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("timestamp", sa.DateTime(), nullable=False),
    # The UTC hour bucket of ``timestamp`` (hours since 1970): portable integer arithmetic
    # for the window queries instead of each dialect's date functions.
    sa.Column("epoch_hour", sa.Integer(), nullable=False),
    sa.Column("customer_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("terminal_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("amount", sa.Float(), nullable=False),
    # Deterministic pseudo-random key from the transaction_id (0 .. 2**31-1): training samples
    # genuine rows with "sample_key < rate * 2**31", so a rerun picks the same rows.
    sa.Column("sample_key", sa.Integer(), nullable=False),
    # Whether this row's fraud label is counted in its terminal bucket: makes applying a
    # label change idempotent and race-free (see shared.storage.aggregates).
    sa.Column("fraud_counted", sa.Boolean(), nullable=False, server_default=sa.false()),
    # The service's answer at scoring time (NULL for imported history never scored online).
    sa.Column("fraud_probability", sa.Float(), nullable=True),
    sa.Column("predicted_fraud", sa.Boolean(), nullable=True),
    sa.Column("model_version", sa.String(MODEL_VERSION_LENGTH), nullable=True),
    sa.Column("scored_at", sa.DateTime(), nullable=True),
    sa.Column("degraded", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("decision", sa.String(16), nullable=True),  # approve | review | decline
    sa.Column("review_threshold", sa.Float(), nullable=True),
    sa.Column("decline_threshold", sa.Float(), nullable=True),
    sa.Column("rule", sa.String(64), nullable=True),  # the rule that decided, e.g. rule:deny_terminal
    sa.Column("reasons", sa.Text(), nullable=True),  # JSON: the top reasons of a review/decline
    sa.Column("persisted_at", sa.DateTime(), nullable=False),
    sa.UniqueConstraint("transaction_id", name="uq_transactions_transaction_id"),
)
# The card's transactions of one hour, in order: the only raw rows a feature lookup reads.
sa.Index("ix_transactions_customer_hour", transactions.c.customer_id, transactions.c.epoch_hour,
         transactions.c.timestamp, postgresql_include=["amount"], mssql_include=["amount"])
sa.Index("ix_transactions_time", transactions.c.timestamp)

customer_buckets = sa.Table(
    "customer_buckets",
    metadata,
    sa.Column("customer_id", sa.String(ID_LENGTH), primary_key=True),
    sa.Column("hour", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("tx_count", sa.Integer(), nullable=False),
    sa.Column("amount_sum", sa.Float(), nullable=False),
    sa.Column("amount_sumsq", sa.Float(), nullable=False),
    sa.Column("amount_max", sa.Float(), nullable=False),
)

terminal_buckets = sa.Table(
    "terminal_buckets",
    metadata,
    sa.Column("terminal_id", sa.String(ID_LENGTH), primary_key=True),
    sa.Column("day", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("tx_count", sa.Integer(), nullable=False),
    sa.Column("fraud_count", sa.Integer(), nullable=False),
)

# The label in force per transaction, kept apart from predictions and keyed by
# transaction_id, so a label that arrives before its transaction is kept and joins up later.
labels = sa.Table(
    "labels",
    metadata,
    sa.Column("transaction_id", sa.String(ID_LENGTH), primary_key=True),
    sa.Column("is_fraud", sa.Boolean(), nullable=False),
    sa.Column("labeled_at", sa.DateTime(), nullable=False),
    sa.Column("source", sa.String(32), nullable=False, server_default="api"),
    sa.Column("key_id", sa.String(16), nullable=False, server_default="none"),
)
sa.Index("ix_labels_labeled_at", labels.c.labeled_at)

# Every label ever received, with who sent it: revoking a source or a time range restores
# the label each transaction had before (or none).
label_events = sa.Table(
    "label_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("transaction_id", sa.String(ID_LENGTH), nullable=False),
    sa.Column("is_fraud", sa.Boolean(), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("received_at", sa.DateTime(), nullable=False),
    sa.Column("revoked_at", sa.DateTime(), nullable=True),
)
sa.Index("ix_label_events_transaction", label_events.c.transaction_id, label_events.c.id)
sa.Index("ix_label_events_received", label_events.c.received_at)

training_runs = sa.Table(
    "training_runs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("started_at", sa.DateTime(), nullable=False),
    sa.Column("finished_at", sa.DateTime(), nullable=True),
    sa.Column("trigger", sa.String(16), nullable=False),
    # running | skipped | promoted | rejected | failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("labeled_count", sa.Integer(), nullable=False),
    sa.Column("new_labels", sa.Integer(), nullable=False),
    # Whether the run used up the labels it saw (trained, or found them unusable): the
    # next run waits for new labels counted from this run on.
    sa.Column("consumed_labels", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("training_rows", sa.Integer(), nullable=True),
    sa.Column("holdout_rows", sa.Integer(), nullable=True),
    sa.Column("model_version", sa.String(MODEL_VERSION_LENGTH), nullable=True),
    sa.Column("champion_version", sa.String(MODEL_VERSION_LENGTH), nullable=True),
    sa.Column("metrics", sa.Text(), nullable=True),
    sa.Column("champion_metrics", sa.Text(), nullable=True),
    sa.Column("details", sa.Text(), nullable=True),  # JSON: sampling, windows, gate statistics
)

# Operator rules evaluated before the model (shared/rules.py): deny/allow lists and amount limits.
rules = sa.Table(
    "rules",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("value", sa.String(ID_LENGTH), nullable=False),
    sa.Column("note", sa.Text(), nullable=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("expires_at", sa.DateTime(), nullable=True),
)

schema_info = sa.Table(
    "schema_info",
    metadata,
    sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
)


class SchemaOutdated(RuntimeError):
    """The database was created by an older version of the service."""


def create_schema(engine: Engine) -> None:
    """Create tables and indexes that are missing (safe to run any number of times).

    Refuses a database made by an older schema: its tables would lack columns the
    service writes.
    """
    inspector = sa.inspect(engine)
    if inspector.has_table("transactions"):
        columns = {c["name"] for c in inspector.get_columns("transactions")}
        if "epoch_hour" not in columns:
            raise SchemaOutdated(
                "the database was created by an older version of the service (schema 1: no bucketed "
                "feature aggregates); create a new database (locally: delete .local/) and import the history "
                "with `python -m shared.cli import`")
    metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        if conn.execute(sa.select(sa.func.count()).select_from(schema_info)).scalar_one() == 0:
            conn.execute(sa.insert(schema_info).values(version=SCHEMA_VERSION))


def sample_key(transaction_id: str) -> int:
    """The row's deterministic sampling key in [0, 2**31): the first 31 bits of SHA-256."""
    return int.from_bytes(hashlib.sha256(transaction_id.encode("utf-8")).digest()[:4], "big") >> 1


SAMPLE_KEY_RANGE = 1 << 31
