"""Operator tasks behind the CLI: history import, simulated traffic, database status.

Simulated traffic continues the population ``init`` simulated. ``init`` records it in the
model container (``simulation/population.json``: the simulation's seed, sizes, start, days
and fraud rates, which transactions of it became the stored history, and how far ``simulate``
has got). A blob rather than a table: it describes a demo's data, not the service's, and
needs no schema change; ``simulate`` checks that the database holds the history it names.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from .schema import Label, Transaction
from .storage.engines import redact_url, utcnow
from .storage.schema import create_schema
from .storage.transactions import transaction_row

if TYPE_CHECKING:
    import pandas as pd

    from .simulator import Population
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


# --- the simulated population: recorded by init, continued by simulate ----------------------

# Beside the models, in the model container: what init simulated, and how far simulate got.
POPULATION_BLOB = "simulation/population.json"
SIMULATE_LOCK_BLOB = "locks/simulate"
SIMULATOR_SOURCE = "simulator"
# predict refuses timestamps older than PREDICT_MAX_AGE_HOURS when it receives them: the live
# batch starts this much later, so the last of it is still accepted after sending the rest.
SEND_MARGIN = timedelta(minutes=10)
# Sending a batch over HTTP: how long to wait for a card's previous transaction to be stored.
STORED_WAIT_SECONDS = 10.0


class NotSimulated(RuntimeError):
    """The stored history is not a simulated population that ``simulate`` can continue."""


@dataclass
class SimulationRecord:
    """What ``init`` simulated (the population and the history stored from it) and how far
    ``simulate`` has continued it: every transaction of the continuation before ``through``
    is stored or was sent; those in the ``unlabeled`` ranges were imported before their
    label was due and get it once older than the label delay."""

    population: Population
    history: dict[str, Any]  # first_id, last_id, end, transactions, frauds
    through: datetime
    unlabeled: list[tuple[datetime, datetime]] = field(default_factory=list)
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    batches: int = 0

    def to_json(self) -> str:
        return json.dumps({
            "kind": "simulated-population",
            "format": 1,
            "population": self.population.to_dict(),
            "history": self.history,
            "through": _iso(self.through),
            "unlabeled": [[_iso(a), _iso(b)] for a, b in self.unlabeled],
            "created_at": _iso(self.created_at),
            "batches": self.batches,
        }, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> SimulationRecord:
        from .simulator import Population

        data = json.loads(text)
        if data.get("kind") != "simulated-population" or data.get("format") != 1:
            raise ValueError(f"{POPULATION_BLOB} is not a simulated-population record (format 1)")
        return cls(
            population=Population.from_dict(data["population"]),
            history=data["history"],
            through=_parse_iso(data["through"]),
            unlabeled=[(_parse_iso(a), _parse_iso(b)) for a, b in data.get("unlabeled", [])],
            created_at=_parse_iso(data["created_at"]),
            batches=int(data.get("batches", 0)),
        )


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def record_population(wiring: Wiring, population: Population, history: pd.DataFrame) -> SimulationRecord:
    """Record (beside the models) the population ``history`` was simulated from, so that
    ``simulate`` continues it; replaces an earlier record."""
    end = history["timestamp"].max().to_pydatetime()
    record = SimulationRecord(
        population=population,
        history={"first_id": str(history["transaction_id"].iloc[0]),
                 "last_id": str(history["transaction_id"].iloc[-1]),
                 "end": _iso(end), "transactions": int(len(history)), "frauds": int(history["label"].sum())},
        through=end,
    )
    wiring.store.container.upload_blob(POPULATION_BLOB, record.to_json(), overwrite=True)
    return record


def load_population(wiring: Wiring) -> SimulationRecord:
    """The recorded population, checked against the database. Raises NotSimulated when there
    is none (a history imported or made otherwise) or the database does not hold its history."""
    from azure.core.exceptions import ResourceNotFoundError

    container = wiring.store.container.container_name
    try:
        text = wiring.store.container.download_blob(POPULATION_BLOB).readall()
    except ResourceNotFoundError:
        raise NotSimulated(
            "simulate can only continue the simulated population `init` creates, and this history was not made "
            f"by init (no {POPULATION_BLOB} in container {container!r}, e.g. imported data); "
            "for a standalone simulated history use `simulate --out FILE.csv`") from None
    record = SimulationRecord.from_json(text)
    for key in ("first_id", "last_id"):
        if wiring.transactions.find(record.history[key]) is None:
            raise NotSimulated(
                f"the database does not hold the simulated history recorded in {container}/{POPULATION_BLOB} "
                f"(transaction {record.history[key]} is missing: was the database replaced?); simulate can only "
                "continue the population `init` stored")
    return record


def save_population(wiring: Wiring, record: SimulationRecord) -> None:
    wiring.store.container.upload_blob(POPULATION_BLOB, record.to_json(), overwrite=True)


@dataclass
class LiveBatch:
    """The next stretch of the simulated population, ``start`` to ``end``: what came before
    the ``live`` transactions (the latest, to be scored) has been imported as history."""

    live: pd.DataFrame
    start: datetime
    end: datetime
    earliest: datetime  # the oldest timestamp predict still accepts once the batch is sent
    imported: int = 0
    imported_labels: int = 0
    matured_labels: int = 0
    record: SimulationRecord | None = None  # the state once the batch is sent


def prepare_live_batch(wiring: Wiring, record: SimulationRecord, count: int, now: datetime,
                       on_import: Callable[[int], None] | None = None,
                       on_import_total: Callable[[int], None] | None = None) -> LiveBatch:
    """Continue the population from ``record.through`` to ``now``: the latest ``count``
    transactions no older than predict accepts are the live batch; everything before them is
    imported through :func:`import_history` (labels only where older than the label delay, as
    a real history has them). Labels of earlier imports that have come due are recorded."""
    import pandas as pd

    from .simulator import continue_population

    delay = timedelta(days=wiring.spec.delay_days)
    labels_due_before = now - delay
    start = record.through
    state = replace(record, unlabeled=[])
    matured = 0
    for a, b in record.unlabeled:
        due_end = min(b, labels_due_before)
        if a < due_end:
            due = continue_population(record.population, a, due_end)
            matured += wiring.labels.record([Label(i, bool(v)) for i, v in zip(due["transaction_id"], due["label"])],
                                            source=SIMULATOR_SOURCE, key_id="cli")
        if max(a, due_end) < b:
            state.unlabeled.append((max(a, due_end), b))

    rows = continue_population(record.population, start, now)  # empty unless start < now
    earliest = now - wiring.settings.predict_max_age + SEND_MARGIN
    batch = LiveBatch(live=rows, start=start, end=max(start, now), earliest=earliest, matured_labels=matured)
    if len(rows):
        recent = rows[rows["timestamp"] >= pd.Timestamp(earliest)]
        if len(recent) > count:
            # Split between two instants: what is live never shares a second with history.
            boundary = recent["timestamp"].iloc[len(recent) - count - 1]
            recent = recent[recent["timestamp"] > boundary]
        live_from = len(rows) - len(recent)
        gap = rows.iloc[:live_from].copy()
        batch.live = rows.iloc[live_from:].reset_index(drop=True)
        if len(gap):
            due = gap["timestamp"] < pd.Timestamp(labels_due_before)
            gap["label"] = gap["label"].astype("float64").where(due)
            if on_import_total is not None:
                on_import_total(len(gap))
            batch.imported, batch.imported_labels = import_history(wiring, gap, on_chunk=on_import)
            gap_end = (batch.live["timestamp"].iloc[0].to_pydatetime() if len(batch.live) else now)
            young_from = max(start, labels_due_before)
            if young_from < gap_end and not due.all():
                state.unlabeled.append((young_from, gap_end))
    state.through = max(start, now)
    state.batches = record.batches + 1
    batch.record = state
    return batch


def score_and_store(wiring: Wiring, frame: pd.DataFrame,
                    on_sent: Callable[[int], None] | None = None) -> list[dict[str, Any] | None]:
    """Score each transaction with the scoring use case (which queues it, as predict does) and
    store it at once, as the persist function would: the batch spans hours of the population's
    time sent within seconds, and each transaction's features must see the card's earlier
    ones. The persist function later finds them stored and skips them. Returns per row the
    decision and model version (None: not queued)."""
    from .errors import EnqueueFailed

    answers: list[dict[str, Any] | None] = []
    for row in frame.itertuples(index=False):
        transaction = Transaction(row.transaction_id, row.timestamp.to_pydatetime(), row.customer_id,
                                  row.terminal_id, float(row.amount))
        try:
            prediction = wiring.scoring.score(transaction)
        except EnqueueFailed:
            answers.append(None)
        else:
            scored = prediction.scored
            wiring.transactions.add_scored([scored])
            answers.append({"decision": scored.decision or ("decline" if scored.is_fraud else "approve"),
                            "model_version": scored.model_version, "degraded": scored.degraded})
        if on_sent is not None:
            on_sent(1)
    return answers


def record_simulated_labels(wiring: Wiring, frame: pd.DataFrame, answers: list[dict[str, Any] | None]) -> int:
    """The true labels of the sent transactions (source ``simulator``)."""
    labels = [Label(row.transaction_id, bool(row.label))
              for row, answer in zip(frame.itertuples(index=False), answers) if answer is not None]
    return wiring.labels.record(labels, source=SIMULATOR_SOURCE, key_id="cli") if labels else 0


class StoredWaiter:
    """For sending over HTTP: called before each transaction, waits until the card's previous
    one in the batch is stored (the persist function runs behind predict), so its features see
    it as they would in real time. After one wait times out (the service stores elsewhere?),
    it stops waiting and says so (``gave_up``)."""

    def __init__(self, wiring: Wiring, timeout: float = STORED_WAIT_SECONDS):
        self.wiring = wiring
        self.timeout = timeout
        self.gave_up = False
        self._previous: dict[str, str] = {}
        self._stored: set[str] = set()

    def __call__(self, row: Any) -> None:
        import time

        earlier = self._previous.get(row.customer_id)
        self._previous[row.customer_id] = row.transaction_id
        if earlier is None or earlier in self._stored or self.gave_up:
            return
        deadline = time.monotonic() + self.timeout
        while self.wiring.transactions.find(earlier) is None:
            if time.monotonic() > deadline:
                self.gave_up = True
                return
            time.sleep(0.05)
        self._stored.add(earlier)


# --- how the live decisions compare with the model's holdout -------------------------------


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 6) if denominator else None


def live_summary(frame: pd.DataFrame, answers: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Decisions against the true labels: precision and recall of decline and of review-or-
    decline, and the share of genuine transactions flagged."""
    import numpy as np

    sent = np.array([a is not None for a in answers], dtype=bool)
    decision = np.array([a["decision"] if a else "" for a in answers], dtype=object)
    fraud = frame["label"].to_numpy().astype(bool) & sent
    genuine = ~frame["label"].to_numpy().astype(bool) & sent
    scenario = frame["fraud_scenario"].to_numpy()
    declined = decision == "decline"
    flagged = declined | (decision == "review")
    names = {1: "large_amount", 2: "compromised_terminal", 3: "compromised_card", 4: "card_testing"}
    return {
        "sent": int(sent.sum()),
        "failed": int((~sent).sum()),
        # Scored without the history (it could not be read in time): features incomplete.
        "degraded": sum(1 for a in answers if a and a.get("degraded")),
        "decisions": {name: int((decision == name).sum()) for name in ("approve", "review", "decline")},
        "true_frauds": int(fraud.sum()),
        "frauds_by_scenario": {names[s]: int((fraud & (scenario == s)).sum()) for s in names},
        "flagged_frauds_by_scenario": {names[s]: int((fraud & flagged & (scenario == s)).sum()) for s in names},
        "decline": {"precision": _ratio((declined & fraud).sum(), declined.sum()),
                    "recall": _ratio((declined & fraud).sum(), fraud.sum())},
        "review_or_decline": {"precision": _ratio((flagged & fraud).sum(), flagged.sum()),
                              "recall": _ratio((flagged & fraud).sum(), fraud.sum())},
        "genuine_flagged_share": {"review_or_decline": _ratio((flagged & genuine).sum(), genuine.sum()),
                                  "decline": _ratio((declined & genuine).sum(), genuine.sum())},
    }


def holdout_rates(metadata: dict[str, Any], policy: str) -> dict[str, Any]:
    """The serving model's holdout figures comparable with :func:`live_summary`: its false-
    positive rate (share of genuine transactions flagged) for decline and review-or-decline,
    derived from the holdout metrics (population estimates)."""
    metrics = metadata.get("metrics") or {}
    total = float(metrics.get("population_rows") or metrics.get("rows") or 0)
    frauds = float(metrics.get("frauds") or 0)
    result: dict[str, Any] = {"model_version": metadata.get("version"), "policy": policy,
                              "holdout_rows": metrics.get("rows"), "holdout_frauds": metrics.get("frauds")}
    if not total or frauds >= total:
        return result
    prevalence = frauds / total
    decisions = metadata.get("decision_metrics")
    if policy == "cost" and decisions:
        def rates(names: tuple[str, ...]) -> dict[str, float | None]:
            share = sum(decisions[n]["share"] for n in names)
            caught = sum(decisions[n]["fraud_share"] for n in names)
            return {"false_positive_rate": round(max(share - prevalence * caught, 0.0) / (1 - prevalence), 6),
                    "precision": round(prevalence * caught / share, 6) if share else None,
                    "recall": round(caught, 6)}
        decline, flagged = rates(("decline",)), rates(("review", "decline"))
    else:  # one threshold: decline at it, no review band
        share, precision = float(metrics.get("flagged_share", 0.0)), float(metrics.get("precision", 0.0))
        decline = flagged = {"false_positive_rate": round(share * (1 - precision) / (1 - prevalence), 6),
                             "precision": round(precision, 6), "recall": round(float(metrics.get("recall", 0.0)), 6)}
    result.update({"fraud_rate": round(prevalence, 6), "decline": decline, "review_or_decline": flagged})
    return result
