"""Training runs: every retraining attempt, recorded whatever its outcome."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .engines import naive_utc, utcnow
from .schema import training_runs

RUN_STATUSES = ("running", "skipped", "promoted", "rejected", "failed")


@dataclass
class TrainingRun:
    """One retraining attempt. ``consumed_labels``: the run used up the labels it saw
    (trained on them, or found them unusable), so the next run waits for new ones."""

    started_at: datetime
    trigger: str
    status: str = "running"
    reason: str = ""
    labeled_count: int = 0
    new_labels: int = 0
    consumed_labels: bool = False
    training_rows: int | None = None
    holdout_rows: int | None = None
    model_version: str | None = None
    champion_version: str | None = None
    metrics: dict[str, Any] | None = None
    champion_metrics: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    finished_at: datetime | None = None
    id: int | None = None

    def row(self) -> dict[str, Any]:
        if self.status not in RUN_STATUSES:
            raise ValueError(f"unknown training run status {self.status!r}")
        return {
            "started_at": naive_utc(self.started_at),
            "finished_at": naive_utc(self.finished_at) if self.finished_at else None,
            "trigger": self.trigger,
            "status": self.status,
            "reason": self.reason[:4000],
            "labeled_count": self.labeled_count,
            "new_labels": self.new_labels,
            "consumed_labels": self.consumed_labels,
            "training_rows": self.training_rows,
            "holdout_rows": self.holdout_rows,
            "model_version": self.model_version,
            "champion_version": self.champion_version,
            "metrics": _dumps(self.metrics),
            "champion_metrics": _dumps(self.champion_metrics),
            "details": _dumps(self.details or None),
        }


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(_nan_to_none(value), default=str)


def _nan_to_none(value: Any) -> Any:
    """NaN (an undefined metric) is not JSON: null instead."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


class TrainingRunStore:
    """The ``training_runs`` table."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def start(self, run: TrainingRun) -> TrainingRun:
        """Record the run as ``running`` before any work, so a crash leaves a trace."""
        with self.engine.begin() as conn:
            key = conn.execute(sa.insert(training_runs).values(**run.row())).inserted_primary_key
            assert key is not None
            run.id = int(key[0])
        return run

    def finish(self, run: TrainingRun) -> TrainingRun:
        run.finished_at = run.finished_at or datetime.now(timezone.utc)
        if run.id is None:
            return self.start(run)
        with self.engine.begin() as conn:
            conn.execute(training_runs.update().where(training_runs.c.id == run.id).values(**run.row()))
        return run

    def labels_at_last_consuming_run(self) -> int:
        """The labeled-transaction count the last run that used up its labels saw (0 if none)."""
        query = (sa.select(training_runs.c.labeled_count)
                 .where(training_runs.c.consumed_labels == sa.true())
                 .order_by(training_runs.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar() or 0

    def fail_abandoned(self, older_than: timedelta) -> int:
        """Mark runs still ``running`` after ``older_than`` as failed: their process died
        (the retrain lease, which a live run renews, has long expired by then)."""
        cutoff = utcnow() - older_than
        with self.engine.begin() as conn:
            return conn.execute(
                training_runs.update()
                .where(training_runs.c.status == "running", training_runs.c.started_at < cutoff)
                .values(status="failed", finished_at=utcnow(),
                        reason="abandoned: the process running it stopped before it finished")).rowcount

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        query = sa.select(training_runs).order_by(training_runs.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        for row in rows:
            for key in ("metrics", "champion_metrics", "details"):
                row[key] = json.loads(row[key]) if row[key] else None
        return rows
