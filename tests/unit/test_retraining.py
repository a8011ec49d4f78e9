"""The retraining use case on in-memory stores: the decision to train, the bounded sample, the
gate against a champion trained with other features, unusable labels and crashes. The same
use case runs on Azurite, SQLite and PostgreSQL in tests/integration and tests/e2e."""
from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shared.features import DEFAULT_SPEC, FeatureSpec, compute_aggregates
from shared.model import LoadedModel, load_pipeline, pipeline_scorer
from shared.simulator import simulate_for_volume
from shared.storage.runs import TrainingRun
from shared.storage.schema import sample_key
from shared.storage.training_data import Population, SamplePlan, sampled
from shared.training import TrainingParams
from shared.usecases.publishing import read_guard
from shared.usecases.retraining import Retraining, RetrainingSettings

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
PARAMS = TrainingParams(n_estimators=10, max_depth=6, n_jobs=1)
# A champion trained with features today's default does not have (other windows): serving it,
# or judging it, with the current code's features would fail outright.
OTHER_SPEC = FeatureSpec(customer_windows=(2, 14), terminal_windows=(3, 21))


class FakeLabels:
    def __init__(self, count: int):
        self.count = count

    def labeled_count(self) -> int:
        return self.count

    def expire_orphans(self, received_before: datetime) -> int:
        return 0


class FakeRuns:
    def __init__(self) -> None:
        self.runs: list[TrainingRun] = []

    def start(self, run: TrainingRun) -> TrainingRun:
        return run

    def finish(self, run: TrainingRun) -> TrainingRun:
        self.runs.append(run)
        return run

    def labels_at_last_consuming_run(self) -> int:
        return next((r.labeled_count for r in reversed(self.runs) if r.consumed_labels), 0)

    def fail_abandoned(self, older_than: timedelta) -> int:
        return 0


class FakeData:
    """The database's training reads over a labeled history held in pandas (the pandas path of
    the same aggregate definitions)."""

    def __init__(self, history: pd.DataFrame):
        self.history = history.reset_index(drop=True)
        self.keys = np.array([sample_key(t) for t in self.history["transaction_id"]])
        self.fraud = self.history["label"].to_numpy() == 1
        self.asked: list[set[str]] = []

    def _members(self, population: Population) -> np.ndarray:
        ts = self.history["timestamp"]
        return ((ts >= population.window_start) & (ts < population.window_end)).to_numpy() \
            & self.history["label"].notna().to_numpy() & sampled(self.keys, self.fraud, partition=population.partition)

    def population(self, base: Population) -> Population:
        members = self._members(base)
        frauds = int((self.fraud & members).sum())
        return replace(base, frauds=frauds, genuine=int(members.sum()) - frauds)

    def _rows(self, chosen: np.ndarray, aggregates: list) -> pd.DataFrame:
        self.asked.append({a.name for a in aggregates})
        values = compute_aggregates(self.history, wanted=aggregates)
        frame = self.history.loc[chosen, ["transaction_id", "timestamp", "customer_id", "terminal_id", "amount"]]
        frame = frame.assign(label=self.history.loc[chosen, "label"].astype("int64"))
        for a in aggregates:
            frame[a.name] = np.asarray(values[a.name])[chosen]
        return frame.reset_index(drop=True)

    def sample(self, plan: SamplePlan, aggregates: list, chunk_rows: int = 20_000, on_chunk: Any = None) -> Any:
        kept = sampled(self.keys, self.fraud, plan.fraud_rate, plan.genuine_rate, plan.population.partition)
        frame = self._rows(self._members(plan.population) & kept, aggregates)
        frame["weight"] = plan.weight(frame["label"].to_numpy())
        yield frame

    def rows_for_ids(self, transaction_ids: Any, aggregates: list) -> pd.DataFrame:
        return self._rows(self.history["transaction_id"].isin(set(transaction_ids)).to_numpy(), aggregates)


class FakeModels:
    def __init__(self) -> None:
        self.versions: dict[str, tuple[bytes, dict[str, Any], dict[str, bytes]]] = {}
        self.current: str | None = None

    def exclusive(self) -> Any:
        return contextlib.nullcontext()

    def current_version(self) -> str | None:
        return self.current

    def load(self, version: str, compiled: bool = True) -> LoadedModel:
        data, metadata, _ = self.versions[version]
        return LoadedModel(version, metadata, pipeline_scorer(load_pipeline(data, metadata)))

    def load_guard(self, version: str) -> pd.DataFrame | None:
        _, metadata, files = self.versions[version]
        entry = metadata.get("guard")
        return read_guard(files[entry["file"]]) if entry else None

    def publish(self, version: str, model_bytes: bytes, metadata: dict[str, Any],
                extra_files: dict[str, bytes] | None = None) -> None:
        self.versions[version] = (model_bytes, metadata, dict(extra_files or {}))

    def promote(self, version: str, reason: str = "") -> None:
        self.current = version

    def incomplete_versions(self, older_than: timedelta) -> list[str]:
        return []

    def delete_version(self, version: str) -> int:
        return 0


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    frame = simulate_for_volume(12_000, seed=11, n_days=60, start_date="2026-04-01")
    return frame[frame["timestamp"] < NOW].reset_index(drop=True)


def retraining(history: pd.DataFrame, labeled: int, spec: FeatureSpec = DEFAULT_SPEC, runs: FakeRuns | None = None,
               models: FakeModels | None = None, data: Any = None, **settings: Any) -> Retraining:
    values = {"retrain_threshold": 100, "training_window_days": 60, "label_maturity_days": 0, **settings}
    return Retraining(FakeLabels(labeled), runs or FakeRuns(), data or FakeData(history), models or FakeModels(),
                      RetrainingSettings(**values), spec=spec, params=PARAMS, report_builder=None,
                      clock=lambda: NOW)


def test_below_the_threshold_nothing_is_trained(history):
    job = retraining(history, labeled=50)
    run = job.run()
    assert run.status == "skipped" and "retraining needs 100" in run.reason
    assert job.models.versions == {} and not run.consumed_labels


def test_a_first_model_trains_on_a_capped_weighted_sample_and_is_promoted(history):
    job = retraining(history, labeled=len(history), training_max_rows=4_000)
    run = job.run()
    assert run.status == "promoted", run.reason
    assert job.models.current == run.model_version
    sampling = run.details["sampling"]
    population = sampling["population"]["frauds"] + sampling["population"]["genuine"]
    assert population > 4_000 and sampling["genuine_rate"] < 1 and sampling["fraud_rate"] == 1
    assert 3_800 <= sampling["expected_rows"] <= 4_000 and run.training_rows < 4_000
    # The metrics estimate the whole population, not the sample.
    assert run.metrics["population_rows"] > 1.5 * run.holdout_rows
    _, metadata, files = job.models.versions[run.model_version]
    assert metadata["feature_spec"] == DEFAULT_SPEC.to_dict() and metadata["features"] == DEFAULT_SPEC.names
    assert metadata["guard"]["file"] in files


def test_a_champion_with_other_features_is_judged_with_its_own_on_the_same_rows(history):
    runs, models, data = FakeRuns(), FakeModels(), FakeData(history)
    first = retraining(history, labeled=len(history), spec=OTHER_SPEC, runs=runs, models=models, data=data).run()
    assert first.status == "promoted" and models.load(first.model_version).spec == OTHER_SPEC
    second = retraining(history, labeled=2 * len(history), runs=runs, models=models, data=data,
                        gate=replace(RetrainingSettings().gate, min_frauds=5)).run()
    assert second.status in ("promoted", "rejected"), second.reason
    assert "not comparable" not in second.reason
    assert second.champion_version == first.model_version
    comparison = second.champion_metrics["comparison"]
    assert comparison["champion_ap"] > 0 and comparison["rows"] == second.holdout_rows
    # One read served both: the champion's own aggregates were computed with the challenger's.
    both = {a.name for a in OTHER_SPEC.aggregates()} | {a.name for a in DEFAULT_SPEC.aggregates()}
    assert any(both <= asked for asked in data.asked[1:])
    assert second.details["guard"]["rows"] > 0  # and the champion's frozen guard set judged it too


def test_unusable_labels_fail_once_and_wait_for_new_ones(history):
    genuine_only = history.assign(label=0)
    runs = FakeRuns()
    failed = retraining(genuine_only, labeled=len(history), runs=runs).run()
    assert failed.status == "failed" and "not enough usable data" in failed.reason and failed.consumed_labels
    again = retraining(genuine_only, labeled=len(history), runs=runs).run()
    assert again.status == "skipped"  # the same labels are not retried every tick


def test_a_crash_is_recorded_and_the_champion_keeps_serving(history):
    class Broken(FakeData):
        def sample(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("database went away")

    runs, models = FakeRuns(), FakeModels()
    first = retraining(history, labeled=len(history), runs=runs, models=models).run()
    with pytest.raises(ConnectionError):
        retraining(history, labeled=2 * len(history), runs=runs, models=models, data=Broken(history)).run()
    crashed = runs.runs[-1]
    assert crashed.status == "failed" and "ConnectionError" in crashed.reason and not crashed.consumed_labels
    assert models.current == first.model_version and len(models.versions) == 1

