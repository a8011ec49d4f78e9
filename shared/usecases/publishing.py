"""From a labeled training frame to a published model version: train, judge, package,
publish (and promote). Retraining, ``init`` and the test/bench harness all go through
:func:`train_candidate` and :func:`publish_candidate`.

A *training frame* has one row per labeled transaction: ``transaction_id``, ``timestamp``,
``label`` (1 fraud), ``weight`` (how many population rows the row stands for) and one
column per window aggregate (:mod:`shared.features`). It comes from the database
(:class:`shared.storage.training_data.TrainingData`) or from a pandas history
(:func:`history_frame`, for CSV histories and tests).
"""
from __future__ import annotations

import gzip
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ..compiled import ONNX_FILE, PARITY_TOLERANCE, CompilationFailed, compile_checked
from ..decisions import Bands, CostModel, choose_bands, decide
from ..explain import ForestExplainer
from ..features import Aggregate, FeatureSpec, compute_aggregates, finalize
from ..model import library_versions, new_version, serialize_pipeline, sha256_hex, signature
from ..training import TrainingError, TrainingParams, choose_threshold, evaluate, fit_pipeline, time_ordered_split

log = logging.getLogger(__name__)

GUARD_FILE = "guard.csv.gz"
EXPLAINER_FILE = "explainer.npz"
FRAME_COLUMNS = ("transaction_id", "timestamp", "label", "weight")


def features_of(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The ``spec`` features of every row of a training frame (from its aggregate columns)."""
    when = pd.DatetimeIndex(pd.to_datetime(frame["timestamp"], utc=True))
    aggregates = {a.name: frame[a.name].to_numpy(np.float64) for a in spec.aggregates()}
    values = finalize(aggregates, frame["amount"].to_numpy(np.float64), when.day_of_week.to_numpy(),
                      when.hour.to_numpy(), spec)
    return pd.DataFrame(values, index=frame.index)[spec.names]


def history_frame(history: pd.DataFrame, aggregates: list[Aggregate]) -> pd.DataFrame:
    """A training frame from a pandas history: every row's aggregates over the whole
    history, then the labeled rows, each standing for itself (weight 1)."""
    values = compute_aggregates(history, wanted=aggregates)
    frame = history[["transaction_id", "timestamp", "customer_id", "terminal_id", "amount"]].copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    for name, column in values.items():
        frame[name] = column
    labels = pd.to_numeric(history["label"], errors="coerce")
    frame = frame[labels.notna().to_numpy()].copy()
    frame["label"] = labels[labels.notna()].astype(int).to_numpy()
    frame["weight"] = 1.0
    return frame.reset_index(drop=True)


@dataclass
class Candidate:
    """A freshly trained model with everything needed to judge and publish it."""

    pipeline: Any
    spec: FeatureSpec
    threshold: float
    validation_metrics: dict[str, float]
    holdout_metrics: dict[str, float]
    holdout: pd.DataFrame  # the holdout rows: frame columns, aggregates and the spec's features
    training_rows: int
    validation_rows: int
    windows: dict[str, dict[str, str]]
    sampling: dict[str, Any] | None = None
    bands: Bands | None = None  # approve / review / decline thresholds chosen by cost
    costs: CostModel | None = None
    validation: pd.DataFrame | None = None  # label, weight, amount and score of the validation rows

    @property
    def features(self) -> list[str]:
        return self.spec.names

    def holdout_scores(self) -> np.ndarray:
        return self.pipeline.predict_proba(self.holdout[self.features].to_numpy(np.float64))[:, 1]


def _window(part: pd.DataFrame) -> dict[str, str]:
    return {"start": part["timestamp"].min().isoformat(), "end": part["timestamp"].max().isoformat()}


def train_candidate(frame: pd.DataFrame, spec: FeatureSpec, params: TrainingParams, threshold_rule: str,
                    min_rows: int = 200, sampling: dict[str, Any] | None = None,
                    costs: CostModel | None = None) -> Candidate:
    """Fit on the oldest rows, choose the threshold (and, given ``costs``, the decision bands)
    on the next, evaluate on the newest (out of time). Weights make the thresholds and every
    metric estimates for the whole population the rows were sampled from."""
    if len(frame) < min_rows:
        raise TrainingError(f"{len(frame)} labeled transactions; at least {min_rows} are needed")
    frame = frame.reset_index(drop=True)
    features = features_of(frame, spec)
    weight = frame["weight"].to_numpy(np.float64)
    split = time_ordered_split(frame["timestamp"], weights=weight)
    parts = {name: getattr(split, name) for name in ("train", "validation", "holdout")}
    labels = frame["label"].to_numpy().astype(int)
    for name, rows in parts.items():
        if len(np.unique(labels[rows])) < 2:
            raise TrainingError(f"the {name} window holds a single class; more labeled history is needed")
    X = features.to_numpy(np.float64)
    pipeline = fit_pipeline(X[parts["train"]], labels[parts["train"]], params)
    validation, holdout = parts["validation"], parts["holdout"]
    validation_scores = pipeline.predict_proba(X[validation])[:, 1]
    threshold = choose_threshold(labels[validation], validation_scores, threshold_rule,
                                 sample_weight=weight[validation])
    holdout_scores = pipeline.predict_proba(X[holdout])[:, 1]
    validation_frame = pd.DataFrame({"label": labels[validation], "weight": weight[validation],
                                     "amount": frame["amount"].to_numpy(np.float64)[validation],
                                     "score": validation_scores})
    bands = None
    if costs is not None:
        bands = choose_bands(validation_frame["label"], validation_scores, validation_frame["amount"], costs,
                             sample_weight=validation_frame["weight"], current_threshold=threshold)
    rows = frame.iloc[holdout].drop(columns=[c for c in features.columns if c in frame.columns])
    holdout_frame = pd.concat([rows, features.iloc[holdout]], axis=1).reset_index(drop=True)
    return Candidate(
        pipeline=pipeline,
        spec=spec,
        threshold=threshold,
        validation_metrics=evaluate(labels[validation], validation_scores, threshold, weight[validation]),
        holdout_metrics=evaluate(labels[holdout], holdout_scores, threshold, weight[holdout]),
        holdout=holdout_frame,
        training_rows=len(parts["train"]),
        validation_rows=len(validation),
        windows={name: _window(frame.iloc[rows]) for name, rows in parts.items()},
        sampling=sampling,
        bands=bands,
        costs=costs,
        validation=validation_frame,
    )


# --- packaging and publishing -----------------------------------------------------------


@dataclass
class Package:
    """Everything a version is published with."""

    version: str
    model_bytes: bytes
    metadata: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)


def compile_for_serving(candidate: Candidate, signing_key: str) -> tuple[dict[str, bytes], dict[str, Any] | None]:
    """The ONNX file and its metadata entry, or nothing when it does not match the pipeline
    on the holdout (then predict serves the joblib pipeline)."""
    rows = candidate.holdout[candidate.features].to_numpy(np.float64)
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


def guard_bytes(guard: pd.DataFrame) -> bytes:
    """The frozen guard set as gzip CSV (deterministic bytes: no timestamp in the header)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as out:
        out.write(guard.to_csv(index=False).encode("utf-8"))
    return buffer.getvalue()


def read_guard(data: bytes) -> pd.DataFrame:
    frame = pd.read_csv(io.BytesIO(gzip.decompress(data)), dtype={"transaction_id": str})
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    return frame


def package_candidate(candidate: Candidate, params: TrainingParams, threshold_rule: str, signing_key: str,
                      version: str | None = None, guard: pd.DataFrame | None = None,
                      extra_metadata: dict[str, Any] | None = None) -> Package:
    """Serialise, compile and describe a candidate: the bytes and metadata of a version."""
    version = version or new_version()
    model_bytes = serialize_pipeline(candidate.pipeline)
    files, onnx = compile_for_serving(candidate, signing_key)
    metadata: dict[str, Any] = {
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "libraries": library_versions(),
        "features": candidate.features,
        "feature_spec": candidate.spec.to_dict(),
        "threshold": candidate.threshold,
        "threshold_rule": threshold_rule,
        "params": params.to_dict(),
        "metrics": candidate.holdout_metrics,
        "validation_metrics": candidate.validation_metrics,
        "training_rows": candidate.training_rows,
        "validation_rows": candidate.validation_rows,
        "holdout_rows": len(candidate.holdout),
        "windows": candidate.windows,
        "sampling": candidate.sampling,
        "sha256": sha256_hex(model_bytes),
        "onnx": onnx,
        **(extra_metadata or {}),
    }
    # What live traffic is compared with (PSI, shared/drift.py): the holdout's score and features.
    metadata["reference"] = drift_reference(candidate)
    if candidate.bands is not None:
        metadata["bands"] = candidate.bands.to_dict()
        metadata["costs"] = candidate.costs.to_dict() if candidate.costs else None
        metadata["decision_metrics"] = decision_metrics(candidate)
    if signing_key:
        metadata["signature"] = signature(model_bytes, signing_key)
    # The explainer: the forest's trees as plain arrays (no pickle), for per-decision reasons.
    explainer = ForestExplainer.from_model(candidate.pipeline, candidate.features).to_bytes()
    files[EXPLAINER_FILE] = explainer
    metadata["explainer"] = {"file": EXPLAINER_FILE, "sha256": sha256_hex(explainer),
                             **({"signature": signature(explainer, signing_key)} if signing_key else {})}
    if guard is not None and len(guard):
        data = guard_bytes(guard)
        files[GUARD_FILE] = data
        entry = {"file": GUARD_FILE, "sha256": sha256_hex(data), "rows": int(len(guard)),
                 "frauds": int(guard["label"].sum()), "aggregates": [c for c in guard.columns if c not in
                                                                     (*FRAME_COLUMNS, "amount")]}
        if signing_key:
            entry["signature"] = signature(data, signing_key)
        metadata["guard"] = entry
    return Package(version, model_bytes, metadata, files)


def drift_reference(candidate: Candidate) -> dict[str, Any]:
    """The bins and shares of the holdout's scores and features, weighted by the sampling weights."""
    from ..drift import build_reference

    rows = candidate.holdout
    return build_reference({name: rows[name].to_numpy(np.float64) for name in candidate.features},
                           candidate.holdout_scores(), rows["weight"].to_numpy(np.float64), source="holdout")


def decision_metrics(candidate: Candidate) -> dict[str, Any]:
    """What the decision bands do on the holdout: shares approved / reviewed / declined and
    the frauds each band holds (population estimates)."""
    assert candidate.bands is not None
    scores = candidate.holdout_scores()
    weight = candidate.holdout["weight"].to_numpy(np.float64)
    fraud = candidate.holdout["label"].to_numpy() == 1
    decisions = np.array([decide(float(p), candidate.bands) for p in scores])
    total, frauds = weight.sum(), weight[fraud].sum()
    result: dict[str, Any] = {}
    for name in ("approve", "review", "decline"):
        chosen = decisions == name
        result[name] = {"share": float(weight[chosen].sum() / total) if total else 0.0,
                        "fraud_share": float(weight[chosen & fraud].sum() / frauds) if frauds else 0.0}
    return result


ReportBuilder = Callable[[Candidate, dict[str, Any]], dict[str, bytes]]


def _default_report(candidate: Candidate, metadata: dict[str, Any]) -> dict[str, bytes]:
    from ..reporting import build_report

    return build_report(candidate, metadata)


class ModelPublisher(Protocol):
    """Where versions are published (shared.storage.blob.ModelStore)."""

    def publish(self, version: str, model_bytes: bytes, metadata: dict[str, Any],
                extra_files: dict[str, bytes] | None = None) -> None: ...

    def promote(self, version: str, reason: str = "") -> None: ...


def publish_candidate(store: ModelPublisher, package: Package, candidate: Candidate, promote: bool,
                      reason: str = "", report_builder: ReportBuilder | None = _default_report) -> str:
    """Publish a packaged candidate with its report (every version has one unless a caller
    explicitly passes ``report_builder=None``), then promote it if asked."""
    files = dict(package.files)
    if report_builder is not None:
        files.update(report_builder(candidate, package.metadata))
    store.publish(package.version, package.model_bytes, package.metadata, files)
    if promote:
        store.promote(package.version, reason=reason)
    return package.version
