"""The retraining use case: decide, train, evaluate, publish, gate, promote, record."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import pandas as pd

from .app import Services
from .compiled import ONNX_FILE, PARITY_TOLERANCE, CompilationFailed, compile_checked
from .features import FeatureSpec, compute_features
from .model import library_versions, new_version, serialize_pipeline, sha256_hex, signature
from .storage import db
from .storage.blob import LockHeld
from .training import (
    TrainingError,
    TrainingParams,
    choose_threshold,
    evaluate,
    fit_pipeline,
    promotion_decision,
    time_ordered_split,
)

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """A freshly trained model with everything needed to judge and publish it."""

    pipeline: Any
    features: list[str]
    threshold: float
    validation_metrics: dict[str, float]
    holdout_metrics: dict[str, float]
    holdout_frame: pd.DataFrame  # features + label of the holdout rows, for the gate
    training_rows: int
    validation_rows: int
    windows: dict[str, str]


def _window(frame: pd.DataFrame) -> dict[str, str]:
    return {"start": frame["timestamp"].min().isoformat(), "end": frame["timestamp"].max().isoformat()}


def train_candidate(history: pd.DataFrame, spec: FeatureSpec, params: TrainingParams,
                    threshold_rule: str, min_rows: int = 200) -> Candidate:
    """Features over the whole history, then fit on the oldest labeled rows, choose the
    threshold on the next ones and evaluate on the newest (out-of-time holdout)."""
    features = compute_features(history, spec)
    labeled = history["label"].notna().to_numpy()
    if labeled.sum() < min_rows:
        raise TrainingError(f"{int(labeled.sum())} labeled transactions; at least {min_rows} are needed")
    frame = features[labeled].copy()
    frame["label"] = history.loc[labeled, "label"].astype(int).to_numpy()
    frame["timestamp"] = history.loc[labeled, "timestamp"].to_numpy()
    split = time_ordered_split(frame["timestamp"])
    parts = {name: frame.iloc[getattr(split, name)] for name in ("train", "validation", "holdout")}
    for name, part in parts.items():
        if part["label"].nunique() < 2:
            raise TrainingError(f"the {name} window holds a single class; more labeled history is needed")
    names = spec.names
    pipeline = fit_pipeline(parts["train"][names].to_numpy(np.float64), parts["train"]["label"].to_numpy(), params)
    validation_scores = pipeline.predict_proba(parts["validation"][names].to_numpy(np.float64))[:, 1]
    threshold = choose_threshold(parts["validation"]["label"].to_numpy(), validation_scores, threshold_rule)
    holdout_scores = pipeline.predict_proba(parts["holdout"][names].to_numpy(np.float64))[:, 1]
    return Candidate(
        pipeline=pipeline,
        features=names,
        threshold=threshold,
        validation_metrics=evaluate(parts["validation"]["label"].to_numpy(), validation_scores, threshold),
        holdout_metrics=evaluate(parts["holdout"]["label"].to_numpy(), holdout_scores, threshold),
        holdout_frame=parts["holdout"],
        training_rows=len(parts["train"]),
        validation_rows=len(parts["validation"]),
        windows={name: _window(part) for name, part in parts.items()},
    )


def evaluate_champion(services: Services, version: str, holdout: pd.DataFrame) -> dict[str, float] | None:
    """The promoted model's metrics on the challenger's holdout, at its own threshold."""
    champion = services.store.load(version)
    missing = [name for name in champion.features if name not in holdout]
    if missing:
        log.warning("champion %s needs features %s the holdout lacks; not comparable", version, missing)
        return None
    scores = champion.score_rows(holdout[champion.features].to_numpy(np.float64))
    return evaluate(holdout["label"].to_numpy(), scores, champion.threshold)


def build_metadata(version: str, candidate: Candidate, model_bytes: bytes, params: TrainingParams,
                   threshold_rule: str, spec: FeatureSpec, signing_key: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "libraries": library_versions(),
        "features": candidate.features,
        "feature_spec": {"customer_windows": list(spec.customer_windows),
                         "terminal_windows": list(spec.terminal_windows), "delay_days": spec.delay_days},
        "threshold": candidate.threshold,
        "threshold_rule": threshold_rule,
        "params": params.to_dict(),
        "metrics": candidate.holdout_metrics,
        "validation_metrics": candidate.validation_metrics,
        "training_rows": candidate.training_rows,
        "validation_rows": candidate.validation_rows,
        "holdout_rows": len(candidate.holdout_frame),
        "windows": candidate.windows,
        "sha256": sha256_hex(model_bytes),
    }
    if signing_key:
        metadata["signature"] = signature(model_bytes, signing_key)
    return metadata


def compile_for_serving(candidate: Candidate, signing_key: str) -> tuple[dict[str, bytes], dict[str, Any] | None]:
    """The ONNX file and its metadata entry, or nothing when it does not match the pipeline
    on the holdout (then predict serves the joblib pipeline)."""
    rows = candidate.holdout_frame[candidate.features].to_numpy(np.float64)
    try:
        onnx_bytes, gap = compile_checked(candidate.pipeline, rows)
    except CompilationFailed as exc:
        log.error("compiled (ONNX) form NOT published: %s", exc)
        return {}, None
    entry: dict[str, Any] = {"file": ONNX_FILE, "sha256": sha256_hex(onnx_bytes), "max_abs_diff": gap,
                             "checked_rows": len(rows), "tolerance": PARITY_TOLERANCE}
    if signing_key:
        entry["signature"] = signature(onnx_bytes, signing_key)
    return {ONNX_FILE: onnx_bytes}, entry


def package_candidate(version: str, candidate: Candidate, params: TrainingParams, threshold_rule: str,
                      spec: FeatureSpec, signing_key: str) -> tuple[bytes, dict[str, Any], dict[str, bytes]]:
    """Everything a version is published with: joblib bytes, metadata, extra files."""
    model_bytes = serialize_pipeline(candidate.pipeline)
    files, onnx = compile_for_serving(candidate, signing_key)
    metadata = build_metadata(version, candidate, model_bytes, params, threshold_rule, spec, signing_key)
    metadata["onnx"] = onnx
    return model_bytes, metadata, files


ReportBuilder = Callable[[Candidate, dict[str, Any]], dict[str, bytes]]


def run_retraining(services: Services, trigger: str = "timer", force: bool = False,
                   params: TrainingParams | None = None,
                   report_builder: ReportBuilder | None = None) -> db.TrainingRun:
    """Retrain when enough new labels arrived (or ``force``); every outcome is recorded.

    Holds the retrain lease throughout so two retrains never overlap. A failure records
    a ``failed`` run and leaves the promoted model untouched.
    """
    run = db.TrainingRun(started_at=datetime.now(timezone.utc), trigger=trigger)
    try:
        with services.store.exclusive():
            _retrain_holding_lock(services, run, force, params or TrainingParams(), report_builder)
    except LockHeld:
        run.status, run.reason = "skipped", "another retrain is running (lease held)"
    except TrainingError as exc:
        run.status, run.reason = "failed", f"not enough usable data: {exc}"
    except Exception as exc:
        run.status, run.reason = "failed", f"{type(exc).__name__}: {exc}"
        _record(services, run)
        raise
    _record(services, run)
    return run


def _record(services: Services, run: db.TrainingRun) -> None:
    run.finished_at = datetime.now(timezone.utc)
    db.record_training_run(services.engine, run)
    log.info("training run %s: %s (%s)", run.trigger, run.status, run.reason)


def _retrain_holding_lock(services: Services, run: db.TrainingRun, force: bool, params: TrainingParams,
                          report_builder: ReportBuilder | None) -> None:
    settings = services.settings
    run.labeled_count = db.count_labeled_transactions(services.engine)
    run.new_labels = run.labeled_count - db.labeled_count_at_last_training(services.engine)
    if not force and run.new_labels < settings.retrain_threshold:
        run.status = "skipped"
        run.reason = f"{run.new_labels} new labeled transactions; retraining needs {settings.retrain_threshold}"
        return

    history = db.load_history(services.engine)
    candidate = train_candidate(history, services.spec, params, settings.threshold_rule,
                                min_rows=settings.min_training_rows)
    run.training_rows = candidate.training_rows
    run.holdout_rows = len(candidate.holdout_frame)
    run.metrics = candidate.holdout_metrics

    run.champion_version = services.store.current_version()
    champion_metrics = None
    if run.champion_version:
        champion_metrics = evaluate_champion(services, run.champion_version, candidate.holdout_frame)
        run.champion_metrics = champion_metrics

    version = new_version()
    model_bytes, metadata, extra_files = package_candidate(version, candidate, params, settings.threshold_rule,
                                                           services.spec, settings.model_signing_key)
    promote, reason = promotion_decision(candidate.holdout_metrics, champion_metrics, settings.promotion_tolerance)
    metadata["gate"] = {"champion_version": run.champion_version, "champion_metrics": champion_metrics,
                        "promoted": promote, "reason": reason}
    if report_builder:
        extra_files.update(report_builder(candidate, metadata))
    services.store.publish(version, model_bytes, metadata, extra_files)
    run.model_version = version
    if promote:
        services.store.promote(version, reason=reason)
        run.status = "promoted"
    else:
        run.status = "rejected"
    run.reason = reason
