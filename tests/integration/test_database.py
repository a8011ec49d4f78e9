"""The data layer on real databases: SQLite files and a PostgreSQL server, with concurrency.

Parity: for a persisted history, the online lookup, the batch training query and the
pandas definition give the same window aggregates; the maintained buckets equal a rebuild
from the raw rows.
"""
import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from shared.features import CUSTOMER, DEFAULT_SPEC, TERMINAL, aggregate, compute_aggregates
from shared.schema import Label, ScoredTransaction, Transaction
from shared.simulator import simulate_for_volume
from shared.storage import engines
from shared.storage.aggregates import rebuild_buckets
from shared.storage.history import read_history
from shared.storage.labels import LabelFilter, LabelStore
from shared.storage.runs import TrainingRun, TrainingRunStore
from shared.storage.schema import create_schema, customer_buckets, terminal_buckets, transactions
from shared.storage.training_data import GUARD, Population, SamplePlan, TrainingData
from shared.storage.transactions import TransactionStore, transaction_row

WIDE = (datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc))


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
    engine = engines.create_db_engine(url)
    create_schema(engine)
    create_schema(engine)  # idempotent
    yield engine
    engine.dispose()


@pytest.fixture
def without_on_conflict(monkeypatch):
    """Take the path SQL Server takes (no ON CONFLICT): check, write, retry lost races."""
    for module in ("shared.storage.transactions", "shared.storage.aggregates", "shared.storage.labels"):
        monkeypatch.setattr(f"{module}.upsert_constructor", lambda engine: None)


def scored(i: int, customer: str = "C", terminal: str = "T") -> ScoredTransaction:
    when = datetime(2026, 11, 1, 12, i % 60, tzinfo=timezone.utc)
    return ScoredTransaction(Transaction(f"tx-{i}", when, customer, terminal, float(i)), 0.5, False, "v", when)


def persist_concurrently(engine, workers: int, transactions_: int) -> tuple[int, list[Exception]]:
    """``workers`` threads each persist the same transactions at once: (new rows, errors)."""
    store = TransactionStore(engine)
    errors: list[Exception] = []
    inserted: list[int] = []

    def worker():
        try:
            inserted.append(sum(store.add_scored([scored(i)]).inserted for i in range(transactions_)))
        except Exception as exc:  # pragma: no cover - the caller's assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(inserted), errors


def buckets(engine) -> tuple[pd.DataFrame, pd.DataFrame]:
    with engine.connect() as conn:
        customer = pd.DataFrame(conn.execute(sa.select(customer_buckets)).mappings().all())
        terminal = pd.DataFrame(conn.execute(sa.select(terminal_buckets)).mappings().all())
    return (customer.sort_values(["customer_id", "hour"]).reset_index(drop=True),
            terminal.sort_values(["terminal_id", "day"]).reset_index(drop=True))


def assert_buckets_match_a_rebuild(engine):
    maintained = buckets(engine)
    with engine.begin() as conn:
        rebuild_buckets(conn)
    rebuilt = buckets(engine)
    pd.testing.assert_frame_equal(maintained[1], rebuilt[1])
    pd.testing.assert_frame_equal(maintained[0], rebuilt[0], check_exact=False, rtol=1e-9)


@pytest.mark.parametrize("path", ["on_conflict", "sqlserver"])
def test_concurrent_redeliveries_store_each_transaction_once(engine, path, request):
    """Eight workers persist the same 100 transactions at once: 100 rows, no errors, and
    buckets that count each once."""
    if path == "sqlserver":
        request.getfixturevalue("without_on_conflict")
    assert persist_concurrently(engine, workers=8, transactions_=100) == (100, [])
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(transactions)).scalar_one() == 100
        assert conn.execute(sa.select(sa.func.sum(terminal_buckets.c.tx_count))).scalar_one() == 100
    assert_buckets_match_a_rebuild(engine)


def test_conflicting_content_is_reported_and_the_first_kept(engine):
    store = TransactionStore(engine)
    assert store.add_scored([scored(1)]).inserted == 1
    changed = ScoredTransaction(Transaction("tx-1", scored(1).transaction.timestamp, "C", "T", 999.0), 0.9, True,
                                "v", scored(1).scored_at)
    result = store.add_scored([changed, scored(2)])
    assert (result.inserted, result.conflicts) == (1, ["tx-1"])
    assert store.find("tx-1")["amount"] == 1.0


@pytest.mark.parametrize("path", ["on_conflict", "sqlserver"])
def test_labels_move_frauds_into_and_out_of_terminal_buckets(engine, path, request):
    if path == "sqlserver":
        request.getfixturevalue("without_on_conflict")
    store, labels = TransactionStore(engine), LabelStore(engine)
    labels.record([Label("early", True)], source="chargebacks", key_id="k1")  # before its transaction
    store.add_scored([scored(0), ScoredTransaction(Transaction("early", scored(0).transaction.timestamp, "C", "T",
                                                               3.0), 0.1, False, "v", scored(0).scored_at)])
    labels.record([Label("tx-0", True), Label("unknown", True)], source="investigations", key_id="k2")
    _, terminal = buckets(engine)
    assert terminal["fraud_count"].sum() == 2
    labels.record([Label("tx-0", False)], source="investigations", key_id="k2")  # a later label replaces
    assert buckets(engine)[1]["fraud_count"].sum() == 1
    assert labels.labeled_count() == 2  # labels for unknown ids don't count
    assert store.find("tx-0")["label"] is False
    assert_buckets_match_a_rebuild(engine)


def test_revoking_a_source_restores_earlier_labels(engine):
    store, labels = TransactionStore(engine), LabelStore(engine)
    store.add_scored([scored(i) for i in range(3)])
    labels.record([Label("tx-0", False), Label("tx-1", False)], source="chargebacks", key_id="good")
    labels.record([Label("tx-0", True), Label("tx-1", True), Label("tx-2", True)], source="feed", key_id="bad")
    assert buckets(engine)[1]["fraud_count"].sum() == 3
    assert labels.revoke(LabelFilter(key_id="bad")) == 3
    assert [store.find(f"tx-{i}")["label"] for i in range(3)] == [False, False, None]
    assert buckets(engine)[1]["fraud_count"].sum() == 0 and labels.labeled_count() == 2
    summary = {(r["source"], r["key_id"]): r for r in labels.summary(LabelFilter())}
    assert summary[("feed", "bad")]["revoked"] == 3 and summary[("chargebacks", "good")]["revoked"] == 0
    with pytest.raises(ValueError):
        labels.revoke(LabelFilter())
    assert_buckets_match_a_rebuild(engine)


def test_orphan_labels_expire_after_the_grace_period(engine):
    store, labels = TransactionStore(engine), LabelStore(engine)
    old = datetime.now(timezone.utc) - timedelta(days=10)
    labels.record([Label("tx-0", True), Label("never", True)], source="api", key_id="k", received_at=old)
    labels.record([Label("recent-orphan", True)], source="api", key_id="k")
    store.add_scored([scored(0)])
    assert labels.expire_orphans(datetime.now(timezone.utc) - timedelta(days=7)) == 1
    remaining = {e["transaction_id"] for e in labels.events(LabelFilter())}
    assert remaining == {"tx-0", "recent-orphan"}


def test_label_and_transaction_committed_concurrently_are_counted_once(engine):
    """Labels racing with their transactions' inserts (each writer not seeing the other's
    uncommitted row) still end counted exactly once."""
    store, labels = TransactionStore(engine), LabelStore(engine)
    batch = [scored(i, terminal=f"T{i % 5}") for i in range(200)]
    errors: list[Exception] = []

    def run(action):
        try:
            action()
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(lambda part=part: store.add_scored(part),))
               for part in (batch[i::4] for i in range(4))]
    threads += [threading.Thread(target=run, args=(lambda part=part: labels.record(
        [Label(s.transaction.transaction_id, True) for s in part], source="api", key_id="k"),))
        for part in (batch[i::3] for i in range(3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert buckets(engine)[1]["fraud_count"].sum() == 200
    assert_buckets_match_a_rebuild(engine)


def test_training_runs_round_trip_and_abandoned_runs(engine):
    runs = TrainingRunStore(engine)
    run = runs.start(TrainingRun(started_at=datetime.now(timezone.utc), trigger="test"))
    run.status, run.reason, run.labeled_count, run.consumed_labels = "promoted", "ok", 5, True
    run.metrics = {"auc_roc": 0.9, "undefined": float("nan")}
    runs.finish(run)
    assert runs.labels_at_last_consuming_run() == 5
    stale = runs.start(TrainingRun(started_at=datetime.now(timezone.utc) - timedelta(hours=3), trigger="timer"))
    assert runs.fail_abandoned(timedelta(hours=2)) == 1
    latest, first = runs.recent()
    assert latest["id"] == stale.id and latest["status"] == "failed" and "abandoned" in latest["reason"]
    assert first["metrics"] == {"auc_roc": 0.9, "undefined": None} and first["status"] == "promoted"


# --- one definition, three paths ----------------------------------------------------------

# Measures and window shapes the default spec may not use (some it does: kept once below).
EXTRA = [aggregate(CUSTOMER, "max", 24 * 30, 0), aggregate(CUSTOMER, "sumsq", 24 * 30, 24 * 7 + 1),
         aggregate(TERMINAL, "last_fraud_day", 37, 8), aggregate(TERMINAL, "first_fraud_day", 37, 8)]


@pytest.fixture
def persisted_history(engine):
    """A simulated history stored through the service's own write paths, labels older than
    ten days known (half of them sent before their transactions)."""
    history = simulate_for_volume(6000, seed=3, n_days=45, start_date="2026-08-01")
    known = history[history["timestamp"] < history["timestamp"].max() - pd.Timedelta(days=10)]
    labels, store = LabelStore(engine), TransactionStore(engine)
    half = len(known) // 2
    labels.record([Label(i, bool(v)) for i, v in zip(known["transaction_id"][:half], known["label"][:half])],
                  source="test", key_id="k")
    rows = [transaction_row(r.transaction_id, r.timestamp.to_pydatetime(), r.customer_id, r.terminal_id, r.amount,
                            engines.utcnow()) for r in history.itertuples()]
    for start in range(0, len(rows), 1000):
        store.add_rows(rows[start:start + 1000])
    labels.record([Label(i, bool(v)) for i, v in zip(known["transaction_id"][half:], known["label"][half:])],
                  source="test", key_id="k")
    stored = history.copy()
    stored["label"] = np.nan
    stored.loc[known.index, "label"] = known["label"]
    return stored


def test_online_batch_and_pandas_aggregates_agree(engine, persisted_history):
    wanted = list({a.name: a for a in DEFAULT_SPEC.aggregates() + EXTRA}.values())
    offline = compute_aggregates(persisted_history, wanted=wanted)
    position = {tid: i for i, tid in enumerate(persisted_history["transaction_id"])}
    assert (offline[DEFAULT_SPEC.aggregates()[-1].name] > 0).any()  # terminal frauds: where bugs would hide

    # Online: a sample of rows, including the riskiest.
    risky = np.flatnonzero(offline[EXTRA[2].name] > 0)[:100]
    sample = np.r_[np.random.default_rng(0).choice(len(persisted_history), 250, replace=False), risky]
    spec_like = type("Spec", (), {"aggregates": lambda self: wanted})()
    with engine.connect() as conn:
        for i in sample:
            row = persisted_history.iloc[i]
            tx = Transaction(row.transaction_id, row.timestamp.to_pydatetime(), row.customer_id, row.terminal_id,
                             float(row.amount))
            from shared.storage import feature_sql
            from shared.storage.history import history_statement, parameters
            values = conn.execute(history_statement.__wrapped__(spec_like), parameters(tx)).mappings().one()
            online = feature_sql.combine(wanted, values)
            for a in wanted:
                np.testing.assert_allclose(online[a.name], offline[a.name][i], rtol=1e-9, atol=1e-9,
                                           equal_nan=True, err_msg=f"online {a.name} {row.transaction_id}")

    # Batch: every labeled row, streamed in small chunks.
    data = TrainingData(engine)
    population = data.population(Population(*WIDE))
    frames = list(data.sample(SamplePlan(population, 1.0, 1.0), wanted, chunk_rows=700))
    batch = pd.concat(frames, ignore_index=True)
    assert len(batch) == population.rows and len(frames) > 1
    rows = batch["transaction_id"].map(position).to_numpy()
    for a in wanted:
        np.testing.assert_allclose(batch[a.name].to_numpy(), offline[a.name][rows], rtol=1e-9, atol=1e-9,
                                   equal_nan=True, err_msg=f"batch {a.name}")
    assert_buckets_match_a_rebuild(engine)


def test_online_lookup_reads_the_stored_answer_for_a_replayed_id(engine):
    store = TransactionStore(engine)
    store.add_scored([scored(5)])
    with engine.connect() as conn:
        read = read_history(conn, scored(5).transaction, DEFAULT_SPEC)
    assert read.stored["fraud_probability"] == 0.5 and read.stored["model_version"] == "v"


def test_training_sample_is_deterministic_capped_and_weighted(engine, persisted_history):
    data = TrainingData(engine)
    population = data.population(Population(*WIDE))
    plan = SamplePlan.capped(population, max_rows=population.rows // 3)
    first = pd.concat(data.sample(plan, DEFAULT_SPEC.aggregates(), chunk_rows=500), ignore_index=True)
    again = pd.concat(data.sample(plan, DEFAULT_SPEC.aggregates(), chunk_rows=900), ignore_index=True)
    assert first["transaction_id"].tolist() == again["transaction_id"].tolist()  # a rerun keeps the same rows
    assert first["label"].sum() == population.frauds  # every fraud is kept
    assert abs(len(first) - plan.expected_rows) < 0.1 * plan.expected_rows
    # Weights make the sample stand for the population.
    assert first["weight"].sum() == pytest.approx(population.rows, rel=0.1)
    guard = data.population(Population(*WIDE, partition=GUARD))
    assert 0 < guard.rows < 0.05 * population.rows  # a small hash partition training never sees
    guard_ids = set(pd.concat(data.sample(SamplePlan(guard, 1, 1), []))["transaction_id"])
    assert not guard_ids & set(first["transaction_id"])


def test_unlabeled_rows_count_as_genuine_only_when_old_enough(engine, persisted_history):
    data = TrainingData(engine)
    explicit = data.population(Population(*WIDE))
    newest = persisted_history["timestamp"].max().to_pydatetime()
    implicit = data.population(Population(*WIDE, unlabeled_genuine_before=newest - timedelta(days=5)))
    unlabeled = persisted_history["label"].isna() & (persisted_history["timestamp"] < newest - timedelta(days=5))
    in_partition = implicit.rows - explicit.rows
    assert implicit.frauds == explicit.frauds
    assert 0 < in_partition <= unlabeled.sum()
    assert in_partition > 0.9 * unlabeled.sum()  # all but the guard partition's ~2 %
