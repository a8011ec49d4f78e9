"""The data layer on real databases: SQLite files and a PostgreSQL server, with concurrency.

The online feature query must give exactly the offline definition on a persisted history.
"""
import threading
from datetime import datetime, timezone

import pandas as pd
import pytest
import sqlalchemy as sa

from shared.features import DEFAULT_SPEC, compute_features, features_for_one
from shared.schema import Label, ScoredTransaction, Transaction
from shared.simulator import simulate_for_volume
from shared.storage import db


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        base = request.getfixturevalue("postgres_url")
        name = f"t{abs(hash(request.node.nodeid)) % 10**9}"
        admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        admin.dispose()
        url = base.rsplit("/", 1)[0] + "/" + name
    engine = db.create_db_engine(url)
    db.create_schema(engine)
    db.create_schema(engine)  # idempotent
    yield engine
    engine.dispose()


def scored(i: int, customer: str = "C") -> ScoredTransaction:
    when = datetime(2026, 11, 1, 12, i % 60, tzinfo=timezone.utc)
    return ScoredTransaction(Transaction(f"tx-{i}", when, customer, "T", float(i)), 0.5, False, "v", when)


def persist_concurrently(engine, workers: int, transactions: int) -> tuple[int, list[Exception]]:
    """``workers`` threads each persist the same transactions at once: (new rows, errors)."""
    errors: list[Exception] = []
    inserted: list[int] = []

    def worker():
        try:
            inserted.append(sum(db.insert_scored_transaction(engine, scored(i)) for i in range(transactions)))
        except Exception as exc:  # pragma: no cover - the caller's assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(inserted), errors


def test_concurrent_redeliveries_store_each_transaction_once(engine):
    """Eight workers persist the same 100 transactions at once: 100 rows, no errors."""
    assert persist_concurrently(engine, workers=8, transactions=100) == (100, [])
    assert db.table_counts(engine)["transactions"] == 100


def test_bulk_insert_skips_existing_and_counts_new(engine):
    rows = [db._transaction_row(scored(i), db.utcnow()) for i in range(10)]
    assert db.insert_new_rows(engine, db.transactions, rows[:6]) == 6
    assert db.insert_new_rows(engine, db.transactions, rows) == 4


def test_label_upserts_and_labeled_count(engine):
    for i in range(3):
        db.insert_scored_transaction(engine, scored(i))
    db.upsert_labels(engine, [Label("tx-0", True), Label("tx-1", False), Label("unknown", True)])
    db.upsert_labels(engine, [Label("tx-1", True)])
    assert db.count_labeled_transactions(engine) == 2
    assert db.fetch_transaction(engine, "tx-1")["label"] is True


def test_training_runs_round_trip(engine):
    run = db.TrainingRun(started_at=datetime.now(timezone.utc), trigger="test", status="promoted", reason="ok",
                         labeled_count=5, new_labels=5, metrics={"auc_roc": 0.9})
    db.record_training_run(engine, run)
    assert db.labeled_count_at_last_training(engine) == 5
    [stored] = db.list_training_runs(engine)
    assert stored["metrics"] == {"auc_roc": 0.9} and stored["status"] == "promoted"


def test_online_features_equal_offline_features_on_a_persisted_history(engine):
    """Parity: for persisted transactions, the SQL path gives the pandas path's values."""
    history = simulate_for_volume(6000, seed=3, n_days=45, start_date="2026-08-01")
    rows = [{
        "transaction_id": r.transaction_id, "timestamp": r.timestamp.to_pydatetime().replace(tzinfo=None),
        "customer_id": r.customer_id, "terminal_id": r.terminal_id, "amount": float(r.amount),
        "persisted_at": db.utcnow(),
    } for r in history.itertuples()]
    db.insert_new_rows(engine, db.transactions, rows)
    known = history[history["timestamp"] < history["timestamp"].max() - pd.Timedelta(days=10)]
    db.upsert_labels(engine, [Label(i, bool(l)) for i, l in zip(known["transaction_id"], known["label"])])

    stored = db.load_history(engine)
    offline = compute_features(stored).set_index(stored["transaction_id"])
    sample = stored.sample(300, random_state=0)
    # Include the riskiest rows: terminal windows with frauds are where bugs would hide.
    sample = pd.concat([sample, stored.loc[offline["terminal_risk_30d"].to_numpy() > 0].head(100)])
    for row in sample.itertuples():
        tx = Transaction(row.transaction_id, row.timestamp.to_pydatetime(), row.customer_id, row.terminal_id,
                         float(row.amount))
        online = features_for_one(db.history_aggregates(engine, tx, DEFAULT_SPEC), tx.amount, tx.timestamp)
        expected = offline.loc[row.transaction_id]
        for name in DEFAULT_SPEC.names:
            # Counts and flags are exact; means may differ only in float summation order.
            assert online[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-9), (row.transaction_id, name)
    assert (offline["terminal_risk_30d"] > 0).any()


@pytest.fixture
def without_on_conflict(monkeypatch):
    """Take the path SQL Server takes (no ON CONFLICT): check, write, retry lost races."""
    monkeypatch.setattr(db, "_upsert_constructor", lambda engine: None)


def test_sqlserver_write_path_is_idempotent_under_concurrency(engine, without_on_conflict):
    assert persist_concurrently(engine, workers=6, transactions=60) == (60, [])
    assert db.table_counts(engine)["transactions"] == 60


def test_sqlserver_label_path_updates_and_inserts(engine, without_on_conflict):
    db.insert_scored_transaction(engine, scored(1))
    assert db.upsert_labels(engine, [Label("tx-1", True), Label("early", False)]) == 2
    assert db.upsert_labels(engine, [Label("tx-1", False), Label("early", True), Label("new", True)]) == 3
    assert db.fetch_transaction(engine, "tx-1")["label"] is False
    assert db.table_counts(engine)["labels"] == 3
