"""The retraining use case: decide, sample, train, judge against the champion, publish,
promote, record.

Its cost is bounded by ``TRAINING_MAX_ROWS``, not by the history: the training set is a
deterministic sample of the labeled population of the last ``TRAINING_WINDOW_DAYS``
(every fraud, genuine rows by a hash of their id), its features computed in the database
(:mod:`shared.storage.training_data`). Sampling weights make the threshold, the metrics,
the gate and the report estimates for the whole population.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ..decisions import CostModel
from ..features import DEFAULT_SPEC, FeatureSpec, union
from ..model import LoadedModel
from ..storage.blob import LockHeld
from ..storage.runs import TrainingRun
from ..storage.training_data import GUARD, Population, SamplePlan
from ..training import Comparison, GateRules, TrainingError, TrainingParams, compare, promotion_decision
from .publishing import (
    FRAME_COLUMNS,
    Candidate,
    ReportBuilder,
    _default_report,
    features_of,
    package_candidate,
    publish_candidate,
    train_candidate,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainingSettings:
    """What the retraining job is told (from shared.config.Settings)."""

    retrain_threshold: int = 1000
    min_training_rows: int = 200
    training_window_days: int = 90
    training_max_rows: int = 400_000
    unlabeled_as_genuine_after_days: int = 0  # 0: only explicit labels train
    threshold_rule: str = "max_f1"
    gate: GateRules = GateRules()
    label_maturity_days: int = 14
    guard_max_rows: int = 20_000
    label_orphan_days: int = 7
    model_signing_key: str = ""
    costs: CostModel | None = None
    drift_retrain_psi: float = 0.25  # 0: drift never triggers a retrain

    @classmethod
    def from_settings(cls, settings: Any) -> RetrainingSettings:
        return cls(
            retrain_threshold=settings.retrain_threshold,
            min_training_rows=settings.min_training_rows,
            training_window_days=settings.training_window_days,
            training_max_rows=settings.training_max_rows,
            unlabeled_as_genuine_after_days=settings.unlabeled_as_genuine_after_days,
            threshold_rule=settings.threshold_rule,
            gate=GateRules(tolerance=settings.promotion_tolerance, min_frauds=settings.gate_min_frauds,
                           confidence=settings.gate_confidence, guard_tolerance=settings.guard_tolerance),
            label_maturity_days=settings.label_maturity_days,
            guard_max_rows=settings.guard_max_rows,
            label_orphan_days=settings.label_orphan_days,
            model_signing_key=settings.model_signing_key,
            costs=settings.costs,
            drift_retrain_psi=settings.drift_retrain_psi,
        )


class Labels(Protocol):
    def labeled_count(self) -> int: ...
    def expire_orphans(self, received_before: datetime) -> int: ...


class Runs(Protocol):
    def start(self, run: TrainingRun) -> TrainingRun: ...
    def finish(self, run: TrainingRun) -> TrainingRun: ...
    def labels_at_last_consuming_run(self) -> int: ...
    def fail_abandoned(self, older_than: timedelta) -> int: ...


class Data(Protocol):
    def population(self, base: Population) -> Population: ...
    def sample(self, plan: SamplePlan, aggregates: list, chunk_rows: int = ..., on_chunk: Any = ...) -> Any: ...
    def rows_for_ids(self, transaction_ids: Any, aggregates: list) -> pd.DataFrame: ...


class Models(Protocol):
    def exclusive(self) -> Any: ...
    def current_version(self) -> str | None: ...
    def load(self, version: str, compiled: bool = ...) -> LoadedModel: ...
    def load_guard(self, version: str) -> pd.DataFrame | None: ...
    def publish(self, version: str, model_bytes: bytes, metadata: dict[str, Any],
                extra_files: dict[str, bytes] | None = None) -> None: ...
    def promote(self, version: str, reason: str = "") -> None: ...
    def incomplete_versions(self, older_than: timedelta) -> list[str]: ...
    def delete_version(self, version: str) -> int: ...


# A run still "running" this long after it started has lost its process (the lease it renews
# expires within seconds of a crash, and a retrain takes minutes).
ABANDONED_AFTER = timedelta(hours=2)
# A version without metadata this old was abandoned (a publish takes seconds).
ORPHAN_AFTER = timedelta(minutes=10)


class Retraining:
    """Retrain when enough new labels arrived (or when forced); every outcome is recorded."""

    def __init__(self, labels: Labels, runs: Runs, data: Data, models: Models, settings: RetrainingSettings,
                 spec: FeatureSpec = DEFAULT_SPEC, params: TrainingParams | None = None,
                 report_builder: ReportBuilder | None = _default_report,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 on_progress: Callable[[str, int], None] | None = None,
                 drift: Callable[[], dict[str, Any]] | None = None):
        self.labels, self.runs, self.data, self.models = labels, runs, data, models
        self.settings = settings
        self.spec = spec
        self.params = params or TrainingParams()
        self.report_builder = report_builder
        self.clock = clock
        self.on_progress = on_progress
        self.drift = drift  # measures live drift (shared.usecases.monitoring); recorded with every run

    def run(self, trigger: str = "timer", force: bool = False) -> TrainingRun:
        """Holds the retrain lease throughout so two retrains never overlap. A failure records
        a ``failed`` run and leaves the promoted model untouched."""
        run = TrainingRun(started_at=self.clock(), trigger=trigger)
        try:
            with self.models.exclusive():
                self._clean_up_after_crashes()
                self._run(run, force)
        except LockHeld:
            run.status, run.reason = "skipped", "another retrain is running (lease held)"
        except TrainingError as exc:
            # Unusable labels stay unusable: wait for new ones rather than retrying every tick.
            run.status, run.reason, run.consumed_labels = "failed", f"not enough usable data: {exc}", True
            _say_why(run)
        except Exception as exc:
            # A crash says nothing about the labels: they stay new, and the next tick retries.
            run.status, run.reason, run.consumed_labels = "failed", f"{type(exc).__name__}: {exc}", False
            _say_why(run)
            self.runs.finish(run)
            raise
        self.runs.finish(run)
        log.info("training run %s: %s (%s)", run.trigger, run.status, run.reason)
        return run

    def _clean_up_after_crashes(self) -> None:
        """What a retrain killed mid-way left: its run still "running", its half-published
        version (files without metadata). Holding the lease, nothing else is publishing."""
        self.runs.fail_abandoned(ABANDONED_AFTER)
        for version in self.models.incomplete_versions(older_than=ORPHAN_AFTER):
            log.warning("deleting version %s: its publication never finished", version)
            self.models.delete_version(version)

    def _run(self, run: TrainingRun, force: bool) -> None:
        s = self.settings
        # Labels whose transaction never arrived are kept for a grace period, then dropped:
        # label traffic for unknown ids cannot grow the database without bound.
        expired = self.labels.expire_orphans(self.clock() - timedelta(days=s.label_orphan_days))
        if expired:
            run.details["expired_orphan_labels"] = expired
        run.labeled_count = self.labels.labeled_count()
        run.new_labels = run.labeled_count - self.runs.labels_at_last_consuming_run()
        drifted = self._drifted(run)
        if force or run.new_labels >= s.retrain_threshold:
            drifted = ""  # retraining anyway
            run.details.pop("retrain_reason", None)
        elif not drifted:
            run.status = "skipped"
            run.reason = f"{run.new_labels} new labeled transactions; retraining needs {s.retrain_threshold}"
            if run.details.get("drift_note"):
                run.reason += f"; {run.details['drift_note']}"
            return
        # Recorded as running before the work, so a process that dies leaves a trace.
        self.runs.start(run)
        started = time.perf_counter()
        now = self.clock()
        champion = self._champion(run)
        aggregates = union(self.spec, *([champion.spec] if champion else []))

        population = self.data.population(Population(
            window_start=now - timedelta(days=s.training_window_days), window_end=now,
            unlabeled_genuine_before=(now - timedelta(days=s.unlabeled_as_genuine_after_days)
                                      if s.unlabeled_as_genuine_after_days else None)))
        plan = SamplePlan.capped(population, s.training_max_rows)
        run.details["sampling"] = plan.to_dict()
        if population.rows < s.min_training_rows:
            raise TrainingError(f"{population.rows} labeled transactions in the last {s.training_window_days} days; "
                                f"at least {s.min_training_rows} are needed")
        frame = self._read(plan, aggregates)
        run.details["feature_query"] = {"rows": len(frame), "seconds": round(time.perf_counter() - started, 2)}
        candidate = train_candidate(frame, self.spec, self.params, s.threshold_rule,
                                    min_rows=s.min_training_rows, sampling=plan.to_dict(), costs=s.costs)
        del frame
        run.consumed_labels = True
        run.training_rows = candidate.training_rows
        run.holdout_rows = len(candidate.holdout)
        run.metrics = candidate.holdout_metrics

        holdout = guard = None
        if champion is not None:
            holdout = self._compare_on(candidate.holdout, candidate, champion)
            run.champion_metrics = {**_champion_metrics(candidate.holdout, champion), "comparison": holdout.to_dict()}
            guard = self._compare_on_guard(candidate, champion, run)
        promote, reason = promotion_decision(holdout, guard, s.gate)
        gate = {"champion_version": run.champion_version, "champion_metrics": run.champion_metrics,
                "holdout": holdout.to_dict() if holdout else None, "guard": guard.to_dict() if guard else None,
                "rules": s.gate.__dict__, "promoted": promote, "reason": reason}
        package = package_candidate(candidate, self.params, s.threshold_rule, s.model_signing_key,
                                    guard=self._guard_rows(now), extra_metadata={"gate": gate})
        publish_candidate(self.models, package, candidate, promote, reason=reason, report_builder=self.report_builder)
        run.model_version = package.version
        run.status = "promoted" if promote else "rejected"
        run.reason = f"{drifted}; {reason}" if drifted else reason
        run.details["seconds"] = round(time.perf_counter() - started, 2)

    # --- drift --------------------------------------------------------------------------

    def _drifted(self, run: TrainingRun) -> str:
        """Measure drift and record it with the run; the reason to retrain on it ("" if none).
        Drift retrains below RETRAIN_THRESHOLD when the largest PSI reaches DRIFT_RETRAIN_PSI and
        there is at least one new labeled transaction (the same labels give the same model)."""
        if self.drift is None:
            return ""
        from .monitoring import drift_summary

        try:
            report = self.drift()
        except Exception as exc:  # drift is monitoring: it never fails a run
            log.warning("drift not measured: %s: %s", type(exc).__name__, exc)
            run.details["drift"] = {"status": "failed", "message": f"{type(exc).__name__}: {str(exc)[:200]}"}
            return ""
        run.details["drift"] = drift_summary(report)
        limit, largest = self.settings.drift_retrain_psi, report.get("max_psi")
        if not limit or largest is None or largest < limit:
            return ""
        where = report.get("max_feature") or "?"
        if run.new_labels < 1:
            run.details["drift_note"] = (f"drift PSI {largest:.3f} ({where}) >= DRIFT_RETRAIN_PSI {limit:g}, "
                                         f"but no new labeled transaction to learn from")
            return ""
        reason = (f"retrained on drift: PSI {largest:.3f} ({where}) >= DRIFT_RETRAIN_PSI {limit:g} "
                  f"with {run.new_labels} new labeled transactions")
        run.details["retrain_reason"] = reason
        return reason

    # --- reading ------------------------------------------------------------------------

    def _read(self, plan: SamplePlan, aggregates: list) -> pd.DataFrame:
        done = [0]

        def progress(rows: int) -> None:
            done[0] += rows
            if self.on_progress:
                self.on_progress("training rows", rows)

        chunks = list(self.data.sample(plan, aggregates, on_chunk=progress))
        if not chunks:
            raise TrainingError("no labeled transactions in the training window")
        return pd.concat(chunks, ignore_index=True)

    def _champion(self, run: TrainingRun) -> LoadedModel | None:
        run.champion_version = self.models.current_version()
        if not run.champion_version:
            return None
        # Loading verifies the champion and its feature spec; a champion that cannot be
        # judged fails the run instead of letting a challenger through unjudged.
        return self.models.load(run.champion_version)

    # --- judging ------------------------------------------------------------------------

    def _compare_on(self, rows: pd.DataFrame, candidate: Candidate, champion: LoadedModel) -> Comparison:
        challenger_scores = candidate.pipeline.predict_proba(
            features_of(rows, candidate.spec).to_numpy(np.float64))[:, 1]
        champion_scores = champion.score_rows(features_of(rows, champion.spec).to_numpy(np.float64))
        return compare(rows["label"].to_numpy(), challenger_scores, champion_scores, rows["weight"].to_numpy(),
                       confidence=self.settings.gate.confidence)

    def _compare_on_guard(self, candidate: Candidate, champion: LoadedModel, run: TrainingRun) -> Comparison | None:
        guard = self.models.load_guard(champion.version)
        if guard is None or guard.empty:
            run.details["guard"] = "the champion has no guard set"
            return None
        needed = union(candidate.spec, champion.spec)
        missing = [a for a in needed if a.name not in guard.columns]
        if missing:  # a new feature: its aggregates come from the database; labels stay frozen
            fresh = self.data.rows_for_ids(guard["transaction_id"].tolist(), missing)
            guard = guard.merge(fresh[["transaction_id", *[a.name for a in missing]]], on="transaction_id", how="inner")
        comparison = self._compare_on(guard, candidate, champion)
        run.details["guard"] = comparison.to_dict()
        return comparison

    def _guard_rows(self, now: datetime) -> pd.DataFrame | None:
        """The guard set frozen with this version: matured labels of the guard partition."""
        s = self.settings
        population = self.data.population(Population(
            window_start=now - timedelta(days=s.training_window_days), window_end=now, partition=GUARD,
            labeled_before=now - timedelta(days=s.label_maturity_days)))
        if population.frauds == 0:
            return None
        plan = SamplePlan.capped(population, s.guard_max_rows)
        chunks = list(self.data.sample(plan, self.spec.aggregates()))
        if not chunks:
            return None
        rows = pd.concat(chunks, ignore_index=True)
        keep = [*FRAME_COLUMNS, "amount", *[a.name for a in self.spec.aggregates()]]
        return rows[keep]


def _say_why(run: TrainingRun) -> None:
    """A failed run that drift started says so first."""
    if run.details.get("retrain_reason"):
        run.reason = f"{run.details['retrain_reason']}; {run.reason}"


def _champion_metrics(holdout: pd.DataFrame, champion: LoadedModel) -> dict[str, float]:
    from ..training import evaluate

    scores = champion.score_rows(features_of(holdout, champion.spec).to_numpy(np.float64))
    return evaluate(holdout["label"].to_numpy(), scores, champion.threshold, holdout["weight"].to_numpy())


