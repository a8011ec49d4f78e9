"""The console's reads: what the service decided, how it turned out, what waits for a human.

Every query here is bounded, so the console stays usable whatever the table holds:

* by time, on ``ix_transactions_time`` (a range of ``transactions.timestamp``), and
* by ``LIMIT`` where it returns rows (the review queue, the training runs), and
* by a statement deadline (``MONITORING_TIMEOUT_MS``): PostgreSQL's ``statement_timeout`` and
  SQL Server's query timeout on their own engine; SQLite is interrupted by a timer
  (:class:`~shared.storage.engines.CancellableQuery`). A query past it raises
  :class:`QueryTimeout` and its panel says so; the others still answer.

``EXPLAIN`` plans and timings at 1M rows: ``bench/console_bench.py``.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from .engines import CancellableQuery, naive_utc
from .schema import SAMPLE_KEY_RANGE, labels, training_runs, transactions

T = TypeVar("T")

SCORE_BINS = 20
DECISIONS = ("approve", "review", "decline")
UNSCORED = "(not scored online)"


class QueryTimeout(TimeoutError):
    """A monitoring query did not finish within its deadline and was cancelled."""


@dataclass(frozen=True)
class Window:
    """[since, until) in naive UTC, and the number of equal time bins to count volume in."""

    since: datetime
    until: datetime
    bins: int = 12

    def edges(self) -> list[datetime]:
        step = (self.until - self.since) / self.bins
        return [self.since + step * i for i in range(self.bins + 1)]


def _fraud() -> Any:
    return labels.c.is_fraud == sa.true()


def _count_if(condition: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def traffic_statement(window: Window) -> sa.Select:
    """One pass over the window: per (decision, rule) the volume, degraded and scored rows, the
    score histogram (``SCORE_BINS`` equal bins) and the volume per time bin."""
    t = transactions.c
    p = t.fraud_probability
    score_columns = [
        _count_if(sa.and_(p >= i / SCORE_BINS, p < (i + 1) / SCORE_BINS if i < SCORE_BINS - 1 else p <= 1.0))
        .label(f"s{i}") for i in range(SCORE_BINS)]
    edges = window.edges()
    time_columns = [_count_if(sa.and_(t.timestamp >= edges[i], t.timestamp < edges[i + 1])).label(f"t{i}")
                    for i in range(window.bins)]
    return (sa.select(t.decision, t.rule, sa.func.count().label("rows"),
                      _count_if(t.degraded == sa.true()).label("degraded"),
                      _count_if(p.is_not(None)).label("scored"),
                      sa.func.coalesce(sa.func.sum(p), 0.0).label("score_sum"), *score_columns, *time_columns)
            .where(t.timestamp >= window.since, t.timestamp < window.until)
            .group_by(t.decision, t.rule))


def review_statement(since: datetime, limit: int, by_score: bool = False) -> sa.Select:
    """Unlabeled transactions decided ``review``, newest first (the index walks back from the
    newest and stops at ``limit``); ``by_score``: the highest-scoring unlabeled ones instead."""
    t = transactions.c
    query = (sa.select(t.transaction_id, t.timestamp, t.customer_id, t.terminal_id, t.amount, t.fraud_probability,
                       t.decision, t.rule, t.reasons, t.model_version, t.degraded)
             .select_from(transactions.outerjoin(labels, labels.c.transaction_id == t.transaction_id))
             .where(t.timestamp >= since, labels.c.transaction_id.is_(None)))
    if by_score:
        return query.where(t.fraud_probability.is_not(None)).order_by(t.fraud_probability.desc()).limit(limit)
    return query.where(t.decision == "review").order_by(t.timestamp.desc()).limit(limit)


def outcomes_statement(since: datetime, until: datetime) -> sa.Select:
    """Per model version, over the transactions of the window: how many were labeled, and the
    confusion counts of its declines and of its flags (review or decline) against the labels."""
    t = transactions.c
    labeled = labels.c.transaction_id.is_not(None)
    declined = t.decision == "decline"
    flagged = t.decision.in_(("review", "decline"))
    return (sa.select(t.model_version, sa.func.count().label("rows"), _count_if(labeled).label("labeled"),
                      _count_if(_fraud()).label("frauds"),
                      _count_if(sa.and_(labeled, declined)).label("labeled_declined"),
                      _count_if(sa.and_(_fraud(), declined)).label("frauds_declined"),
                      _count_if(sa.and_(labeled, flagged)).label("labeled_flagged"),
                      _count_if(sa.and_(_fraud(), flagged)).label("frauds_flagged"),
                      sa.func.min(t.timestamp).label("first"), sa.func.max(t.timestamp).label("last"))
            .select_from(transactions.outerjoin(labels, labels.c.transaction_id == t.transaction_id))
            .where(t.timestamp >= since, t.timestamp < until)
            .group_by(t.model_version))


def count_statement(since: datetime, until: datetime) -> sa.Select:
    t = transactions.c
    return sa.select(sa.func.count()).select_from(transactions).where(t.timestamp >= since, t.timestamp < until)


def sample_statement(since: datetime, until: datetime, key_below: int, limit: int) -> sa.Select:
    """A deterministic hash sample of the window (``sample_key`` below a cut), capped at ``limit``."""
    t = transactions.c
    return (sa.select(t.transaction_id, t.fraud_probability, t.model_version, t.degraded)
            .where(t.timestamp >= since, t.timestamp < until, t.sample_key < key_below).limit(limit))


def runs_statement(limit: int) -> sa.Select:
    return sa.select(training_runs).order_by(training_runs.c.id.desc()).limit(limit)


class _Deadline(CancellableQuery):
    """A statement deadline: once passed, the running statement is interrupted (SQLite, SQL
    Server; PostgreSQL's engine has ``statement_timeout``) until it stops, and a statement that
    would start after it is refused."""

    def __init__(self) -> None:
        super().__init__()
        self.expired = False
        self._interrupt: Callable[[], Any] | None = None

    def started(self, dialect: str, dbapi_connection: Any, cursor: Any) -> None:
        if self.expired:
            raise QueryTimeout("the deadline passed before the statement started")
        with self._lock:
            self._interrupt = (dbapi_connection.interrupt if dialect == "sqlite" else
                               cursor.cancel if dialect == "mssql" else None)

    def finished(self) -> None:
        with self._lock:
            self._interrupt = None

    def expire(self) -> None:
        self.expired = True
        self.poke()

    def poke(self) -> None:
        with self._lock:
            if self._interrupt is not None:
                try:
                    self._interrupt()
                except Exception:  # the statement just ended
                    pass


class MonitoringQueries:
    """The console's database reads, each under ``timeout_ms``."""

    def __init__(self, engine: Engine, timeout_ms: int):
        self.engine = engine
        self.timeout = timeout_ms / 1000

    def _run(self, read: Callable[[sa.Connection], T]) -> T:
        deadline = _Deadline()
        done = threading.Event()

        def watch() -> None:
            if done.wait(self.timeout):
                return
            deadline.expire()
            while not done.wait(0.05):  # an interrupt that came between two steps is lost: again
                deadline.poke()

        watcher = threading.Thread(target=watch, name="monitoring-deadline", daemon=True)
        try:
            with self.engine.connect() as conn:
                watcher.start()
                try:
                    return read(conn.execution_options(cancellable=deadline))
                finally:
                    deadline.finished()
        except DBAPIError as exc:
            if deadline.expired or _is_timeout(exc):
                raise QueryTimeout(f"query cancelled after {self.timeout * 1000:.0f} ms") from None
            raise
        finally:
            done.set()

    # --- live traffic -------------------------------------------------------------------

    def traffic(self, window: Window) -> dict[str, Any]:
        rows = self._run(lambda conn: list(conn.execute(traffic_statement(window)).mappings()))
        total = sum(int(r["rows"]) for r in rows)
        scored = sum(int(r["scored"]) for r in rows)
        by_decision: dict[str, int] = {}
        by_rule: dict[str, int] = {}
        for r in rows:
            decision = r["decision"] or "(none)"
            by_decision[decision] = by_decision.get(decision, 0) + int(r["rows"])
            if r["rule"]:
                by_rule[r["rule"]] = by_rule.get(r["rule"], 0) + int(r["rows"])
        edges = window.edges()
        return {
            "since": edges[0], "until": edges[-1], "transactions": total, "scored": scored,
            "degraded": sum(int(r["degraded"]) for r in rows),
            "mean_score": (sum(float(r["score_sum"]) for r in rows) / scored) if scored else None,
            "decisions": by_decision, "rules": by_rule,
            "score_histogram": {"edges": [i / SCORE_BINS for i in range(SCORE_BINS + 1)],
                                "counts": [sum(int(r[f"s{i}"]) for r in rows) for i in range(SCORE_BINS)]},
            "volume": {"edges": edges, "counts": [sum(int(r[f"t{i}"]) for r in rows) for i in range(window.bins)]},
        }

    # --- the review queue ---------------------------------------------------------------

    def review_queue(self, since: datetime, limit: int, by_score: bool = False) -> list[dict[str, Any]]:
        query = review_statement(naive_utc(since), limit, by_score)
        rows = self._run(lambda conn: [dict(r) for r in conn.execute(query).mappings()])
        for row in rows:
            try:
                row["reasons"] = json.loads(row["reasons"]) if row["reasons"] else []
            except ValueError:
                row["reasons"] = []
        return rows

    # --- outcomes -----------------------------------------------------------------------

    def outcomes(self, since: datetime, until: datetime) -> dict[str, Any]:
        query = outcomes_statement(naive_utc(since), naive_utc(until))
        rows = self._run(lambda conn: [dict(r) for r in conn.execute(query).mappings()])
        versions = []
        for r in rows:
            counts = ("rows", "labeled", "frauds", "labeled_declined", "frauds_declined", "labeled_flagged",
                      "frauds_flagged")
            entry: dict[str, Any] = {key: int(r[key]) for key in counts}
            entry.update(model_version=r["model_version"] or UNSCORED, first=r["first"], last=r["last"],
                         coverage=_ratio(entry["labeled"], entry["rows"]),
                         decline_precision=_ratio(entry["frauds_declined"], entry["labeled_declined"]),
                         decline_recall=_ratio(entry["frauds_declined"], entry["frauds"]),
                         flag_precision=_ratio(entry["frauds_flagged"], entry["labeled_flagged"]),
                         flag_recall=_ratio(entry["frauds_flagged"], entry["frauds"]))
            versions.append(entry)
        versions.sort(key=lambda v: (v["model_version"] == UNSCORED, v["model_version"]), reverse=True)
        total, labeled = sum(v["rows"] for v in versions), sum(v["labeled"] for v in versions)
        return {"since": naive_utc(since), "until": naive_utc(until), "transactions": total, "labeled": labeled,
                "coverage": _ratio(labeled, total), "versions": versions}

    # --- the drift sample ---------------------------------------------------------------

    def sample(self, since: datetime, until: datetime, max_rows: int) -> tuple[int, list[dict[str, Any]]]:
        """(rows in the window, a hash sample of about ``max_rows`` of them spread over the whole
        window): transaction_id, fraud_probability, model_version, degraded."""
        since, until = naive_utc(since), naive_utc(until)

        def read(conn: sa.Connection) -> tuple[int, list[dict[str, Any]]]:
            total = int(conn.execute(count_statement(since, until)).scalar_one())
            if total == 0:
                return 0, []
            rate = min(1.0, max_rows / total)
            cut = min(SAMPLE_KEY_RANGE - 1, int(rate * SAMPLE_KEY_RANGE) + 1)
            rows = [dict(r) for r in conn.execute(sample_statement(since, until, cut, max_rows)).mappings()]
            return total, rows

        return self._run(read)

    # --- training runs ------------------------------------------------------------------

    def runs(self, limit: int) -> list[dict[str, Any]]:
        rows = self._run(lambda conn: [dict(r) for r in conn.execute(runs_statement(limit)).mappings()])
        for row in rows:
            for key in ("metrics", "champion_metrics", "details"):
                try:
                    row[key] = json.loads(row[key]) if row[key] else None
                except ValueError:
                    row[key] = None
        return rows


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _is_timeout(exc: DBAPIError) -> bool:
    """PostgreSQL's statement_timeout (57014 query_canceled), SQL Server's query timeout (HYT00),
    SQLite's interrupt."""
    original = getattr(exc, "orig", None)
    code = str(getattr(original, "sqlstate", "") or (getattr(original, "args", None) or [""])[0])
    return code in ("57014", "HYT00", "HYT01") or "interrupted" in str(original).lower() \
        or "canceling statement due to statement timeout" in str(original).lower()
