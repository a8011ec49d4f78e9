"""retrain_function and the retraining use case: thresholds, gate, lock, failures."""
import json

import pytest
from azure.functions.timer import TimerRequest

import retrain_function
from harness.app import retrain
from shared.operations import import_history
from shared.storage.blob import LockHeld
from shared.training import GateRules


def runs(wiring):
    return wiring.runs.recent()


def run_retraining(wiring, **kwargs):
    return retrain(wiring, **kwargs)


def test_timer_skips_when_too_few_new_labels(app_env, model_factory):
    import_history(app_env, model_factory.history.iloc[:500])
    app_env.retraining.params = model_factory.params
    retrain_function.main(TimerRequest(past_due=False))
    [run] = runs(app_env)
    assert run["status"] == "skipped" and "500 new labeled" in run["reason"]
    assert app_env.store.current_version() is None


def test_enough_labels_train_publish_and_promote_the_first_model(app_env, model_factory):
    import_history(app_env, model_factory.history)
    run = run_retraining(app_env, trigger="test")
    assert run.status == "promoted", run.reason
    assert app_env.store.current_version() == run.model_version
    metadata = app_env.store.metadata(run.model_version)
    population = metadata["sampling"]["population"]
    # Every labeled row of the window but the guard partition's ~2 %, which training never sees.
    assert metadata["training_rows"] + metadata["validation_rows"] + metadata["holdout_rows"] == \
        population["frauds"] + population["genuine"]
    assert 0.95 * len(model_factory.history) < population["frauds"] + population["genuine"] < len(model_factory.history)
    assert 0 < metadata["threshold"] < 1 and metadata["metrics"]["auc_roc"] > 0.7
    assert set(metadata["libraries"]) >= {"scikit-learn", "imbalanced-learn", "python"}
    # The holdout is the newest part: after everything the model was fitted on.
    assert metadata["windows"]["holdout"]["start"] >= metadata["windows"]["train"]["end"]
    [recorded] = runs(app_env)
    assert recorded["status"] == "promoted" and recorded["labeled_count"] == len(model_factory.history)
    # Nothing new since: the next timer run skips.
    assert run_retraining(app_env).status == "skipped"


def test_challenger_worse_than_champion_is_published_but_not_promoted(app_env, model_factory, monkeypatch):
    import_history(app_env, model_factory.history)
    champion = model_factory.publish(app_env.store)
    # Demand a large improvement: the challenger cannot clear it, so it must be rejected.
    run = run_retraining(app_env, force=True, gate=GateRules(tolerance=-0.5, min_frauds=5))
    assert run.status == "rejected" and "champion kept" in run.reason
    assert run.champion_version == champion and run.champion_metrics["rows"] == run.metrics["rows"]
    assert app_env.store.current_version() == champion
    assert run.model_version in [m["version"] for m in app_env.store.list_versions()]


def test_crash_half_way_records_failure_and_keeps_the_promoted_model(app_env, model_factory):
    import_history(app_env, model_factory.history)
    champion = model_factory.publish(app_env.store)

    def crash(candidate, metadata):
        raise MemoryError("simulated crash while building the report")

    with pytest.raises(MemoryError):
        run_retraining(app_env, force=True, report_builder=crash)
    [run] = runs(app_env)
    assert run["status"] == "failed" and "MemoryError" in run["reason"]
    assert app_env.store.current_version() == champion
    # The failed run does not count as "trained": the labels are still new.
    assert app_env.runs.labels_at_last_consuming_run() == 0


def test_two_retrains_never_overlap(app_env, model_factory):
    import_history(app_env, model_factory.history.iloc[:3000])
    with app_env.store.exclusive():
        run = run_retraining(app_env, force=True)
        with pytest.raises(LockHeld):
            with app_env.store.exclusive():
                pass
    assert run.status == "skipped" and "lease held" in run.reason
    # Released afterwards: it can be taken again.
    with app_env.store.exclusive():
        pass


def test_too_little_data_is_recorded_as_failed_not_crashing(app_env, model_factory):
    import_history(app_env, model_factory.history.iloc[:50])
    run = run_retraining(app_env, force=True)
    assert run.status == "failed" and "not enough usable data" in run.reason


def test_report_is_published_beside_the_model(app_env, model_factory, monkeypatch, tmp_path):
    from shared.cli import main as cli
    from shared.reporting import build_report

    import_history(app_env, model_factory.history)
    run = run_retraining(app_env, force=True, report_builder=build_report)
    files = set(app_env.store.list_files(run.model_version))
    assert {"model.joblib", "metadata.json", "report/index.html", "report/metrics.json", "report/pr_curve.png",
            "report/roc_curve.png", "report/score_histogram.png", "report/feature_importance.png"} <= files
    assert cli(["models", "report", run.model_version, "--out", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert summary["holdout"]["average_precision"] == pytest.approx(run.metrics["average_precision"])
    assert (tmp_path / "r" / "pr_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_published_version_carries_a_verified_compiled_form(app_env, model_factory):
    import numpy as np

    import_history(app_env, model_factory.history)
    run = run_retraining(app_env, force=True)
    metadata = app_env.store.metadata(run.model_version)
    assert metadata["onnx"]["file"] == "model.onnx" and metadata["onnx"]["max_abs_diff"] <= 1e-5
    assert metadata["onnx"]["checked_rows"] == metadata["holdout_rows"]
    compiled = app_env.store.load(run.model_version)
    source = app_env.store.load(run.model_version, compiled=False)
    assert compiled.compiled and not source.compiled
    rows = model_factory.candidate.holdout[compiled.features].to_numpy(np.float64)
    np.testing.assert_allclose(compiled.score_rows(rows), source.score_rows(rows), atol=1e-5)


def test_version_without_compiled_form_is_served_from_joblib(app_env, model_factory):
    version = model_factory.publish(app_env.store, compiled=False)
    model = app_env.models.get()
    assert model.version == version and not model.compiled
    assert 0 <= model.score(dict.fromkeys(model.features, 1.0)) <= 1


def test_unusable_labels_are_recorded_once_not_retried_every_tick(app_env, model_factory):
    """Only genuine labels (no fraud at all): the run fails for lack of usable data, and the
    next ticks skip until new labels arrive instead of re-reading the history every time."""
    history = model_factory.history.iloc[:5000].copy()
    history["label"] = 0
    import_history(app_env, history)
    first = run_retraining(app_env, retrain_threshold=100)
    assert first.status == "failed" and "single class" in first.reason
    again = run_retraining(app_env, retrain_threshold=100)
    assert again.status == "skipped" and again.new_labels == 0


def test_a_crashed_publish_leaves_no_orphan_version_and_no_stuck_run(app_env, model_factory, monkeypatch):
    """A retrain killed mid-publish left files without metadata.json and a run "running":
    the next run deletes the orphan and marks the run failed."""
    from datetime import datetime, timedelta, timezone

    from shared.storage.runs import TrainingRun
    from shared.usecases import retraining

    import_history(app_env, model_factory.history)
    app_env.store.container.upload_blob("versions/20260101T000000Z-dead00/model.joblib", b"half")
    app_env.runs.start(TrainingRun(started_at=datetime.now(timezone.utc) - timedelta(hours=3), trigger="timer"))
    monkeypatch.setattr(retraining, "ORPHAN_AFTER", timedelta(0))
    run = run_retraining(app_env, force=True)
    assert run.status == "promoted", run.reason
    assert "20260101T000000Z-dead00" not in {b.name.split("/")[1] for b in
                                              app_env.store.container.list_blobs(name_starts_with="versions/")}
    statuses = [r["status"] for r in app_env.runs.recent()]
    assert statuses == ["promoted", "failed"]
