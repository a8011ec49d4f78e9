"""The monitoring use case: what the console shows, and the drift the retrain timer records.

One snapshot answers the operator's questions: which model serves and how it was judged
(the model store), what the training runs did, what the service decides right now, whether
the traffic still looks like the serving model's holdout (PSI, :mod:`shared.drift`), how
decisions turned out once labels arrived, the queues' health, and what waits for review.
Each part is computed on its own (in parallel) and fails on its own: one that errs or
passes its deadline says so, the others still show.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol

from ..drift import compare
from ..storage.engines import naive_utc
from ..storage.monitoring import MonitoringQueries, QueryTimeout, Window

log = logging.getLogger(__name__)

# The traffic windows the console offers: length and the number of volume bins.
WINDOWS = {"hour": (timedelta(hours=1), 12), "day": (timedelta(days=1), 24)}
DEFAULT_WINDOW = "hour"
# A PSI on fewer live values than this is mostly sampling noise (about (bins - 1) / rows).
DRIFT_MIN_ROWS = 500
DRIFT_CACHE_SECONDS = 60
REVIEW_WINDOW = timedelta(days=7)
REVIEW_LIMIT = 50
OUTCOME_WINDOW = timedelta(days=30)
RUNS_LIMIT = 60
VERSIONS_LIMIT = 20
POISON_SHOWN = 10
METRIC_KEYS = ("auc_roc", "average_precision", "precision", "recall", "f1", "rows", "frauds")


class Store(Protocol):
    """The model store (shared.storage.blob.ModelStore)."""

    container: Any

    def read_pointer(self) -> dict[str, Any] | None: ...
    def metadata(self, version: str) -> dict[str, Any]: ...
    def list_files(self, version: str) -> list[str]: ...


class FeatureRows(Protocol):
    """The batch feature read (shared.storage.training_data.TrainingData)."""

    def rows_for_ids(self, transaction_ids: Sequence[str], aggregates: list) -> Any: ...


class Queues(Protocol):
    def depth(self) -> int: ...
    def poison_depth(self) -> int: ...
    def poison_messages(self, limit: int) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class MonitoringSettings:
    drift_window_hours: int = 168
    drift_sample_rows: int = 2000
    drift_retrain_psi: float = 0.25
    decision_policy: str = "cost"

    @classmethod
    def from_settings(cls, settings: Any) -> MonitoringSettings:
        return cls(drift_window_hours=settings.drift_window_hours, drift_sample_rows=settings.drift_sample_rows,
                   drift_retrain_psi=settings.drift_retrain_psi, decision_policy=settings.decision_policy)


class Monitoring:
    """Computes the console's snapshot and the drift of live traffic."""

    def __init__(self, queries: MonitoringQueries, store: Store, data: FeatureRows, queues: Queues | None,
                 settings: MonitoringSettings = MonitoringSettings(),
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.queries, self.store, self.data, self.queues = queries, store, data, queues
        self.settings = settings
        self.clock = clock
        self._metadata: OrderedDict[str, tuple[dict[str, Any], list[str]]] = OrderedDict()
        self._metadata_lock = threading.Lock()
        self._drift: tuple[float, str, dict[str, Any]] | None = None
        self._pool = ThreadPoolExecutor(max_workers=7, thread_name_prefix="monitoring")
        # Its own workers: a panel waiting on blob reads must never wait for a worker of its own pool.
        self._blobs = ThreadPoolExecutor(max_workers=4, thread_name_prefix="monitoring-blobs")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._blobs.shutdown(wait=False, cancel_futures=True)

    # --- the snapshot -------------------------------------------------------------------

    def snapshot(self, window: str = DEFAULT_WINDOW) -> dict[str, Any]:
        """Every panel's data (JSON-ready); a panel that failed is ``{"error": ...}``."""
        if window not in WINDOWS:
            raise ValueError(f"unknown window {window!r}")
        now = self.clock()
        parts: dict[str, Callable[[], Any]] = {
            "models": self.models,
            "runs": self.runs,
            "traffic": lambda: self.traffic(window, now),
            "drift": lambda: self.drift(now),
            "outcomes": lambda: self.outcomes(now),
            "health": self.health,
            "review": lambda: self.review(now),
        }
        futures = {name: self._pool.submit(_timed, name, part) for name, part in parts.items()}
        snapshot: dict[str, Any] = {"generated_at": now, "window": window, "timings_ms": {}}
        for name, future in futures.items():
            snapshot[name], snapshot["timings_ms"][name] = future.result()
        return jsonable(snapshot)

    def traffic(self, window: str, now: datetime | None = None) -> dict[str, Any]:
        length, bins = WINDOWS[window]
        until = naive_utc(now or self.clock())
        return {"window": window, **self.queries.traffic(Window(until - length, until, bins))}

    def outcomes(self, now: datetime | None = None) -> dict[str, Any]:
        until = naive_utc(now or self.clock())
        return self.queries.outcomes(until - OUTCOME_WINDOW, until)

    def review(self, now: datetime | None = None) -> dict[str, Any]:
        """Transactions decided review, not labeled yet, newest first; with the threshold policy
        (no review band) the highest-scoring unlabeled transactions of the last day instead."""
        now = now or self.clock()
        by_score = self.settings.decision_policy != "cost"
        since = now - (timedelta(days=1) if by_score else REVIEW_WINDOW)
        rows = self.queries.review_queue(since, REVIEW_LIMIT, by_score=by_score)
        return {"mode": "highest_scores" if by_score else "review", "since": naive_utc(since),
                "limit": REVIEW_LIMIT, "transactions": rows}

    def runs(self) -> dict[str, Any]:
        rows = self.queries.runs(RUNS_LIMIT)
        runs = []
        for row in rows:
            details = row.get("details") or {}
            drift = details.get("drift") if isinstance(details, dict) else None
            metrics = row.get("metrics") or {}
            runs.append({
                "id": row["id"], "started_at": row["started_at"], "finished_at": row["finished_at"],
                "trigger": row["trigger"], "status": row["status"], "reason": row["reason"],
                "labeled_count": row["labeled_count"], "new_labels": row["new_labels"],
                "training_rows": row["training_rows"], "model_version": row["model_version"],
                "champion_version": row["champion_version"],
                "metrics": {k: metrics.get(k) for k in METRIC_KEYS if k in metrics},
                "drift": {k: drift.get(k) for k in ("max_psi", "max_feature", "level", "status")}
                if isinstance(drift, dict) else None,
                "retrain_reason": details.get("retrain_reason") if isinstance(details, dict) else None,
            })
        counts: dict[str, int] = {}
        for run in runs:
            counts[run["status"]] = counts.get(run["status"], 0) + 1
        return {"limit": RUNS_LIMIT, "counts": counts, "runs": runs}

    # --- models -------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        """The promoted version, its promotion history and the newest versions, each with its
        holdout metrics, gate decision, training window and report plots."""
        pointer = self.store.read_pointer() or {}
        current = pointer.get("version")
        history = list(pointer.get("history", []))
        rolled_back = [r.get("version") for r in pointer.get("rolled_back", []) if r.get("version")]
        names = self._version_names()
        wanted = list(dict.fromkeys([v for v in [current, *history[:VERSIONS_LIMIT], *rolled_back[:VERSIONS_LIMIT],
                                                 *names[:VERSIONS_LIMIT]] if v]))
        described = list(self._blobs.map(self._describe, wanted))
        versions = []
        for version, found in zip(wanted, described):
            if found is None:
                continue
            metadata, report = found
            status = ("serving" if version == current else "previous" if version in history
                      else "rolled back" if version in rolled_back else "not promoted")
            versions.append(summary(metadata, report, status))
        versions.sort(key=lambda v: v["version"], reverse=True)
        return {"current": current, "promoted_at": pointer.get("promoted_at"), "reason": pointer.get("reason"),
                "history": history, "rolled_back": pointer.get("rolled_back", []), "versions": versions,
                "total_versions": len(names), "rollback_to": history[0] if history else None}

    def model(self, version: str) -> tuple[dict[str, Any], list[str]] | None:
        return self._describe(version)

    def _version_names(self) -> list[str]:
        """Version folders, newest first (names sort by time): one listing of prefixes."""
        names = [item.name.split("/")[1] for item in
                 self.store.container.walk_blobs(name_starts_with="versions/", delimiter="/")
                 if item.name.count("/") >= 2]
        return sorted(set(names), reverse=True)

    def _describe(self, version: str) -> tuple[dict[str, Any], list[str]] | None:
        """A version's metadata and report plots (cached: both never change once published)."""
        with self._metadata_lock:
            if version in self._metadata:
                self._metadata.move_to_end(version)
                return self._metadata[version]
        from azure.core.exceptions import ResourceNotFoundError

        try:
            metadata = self.store.metadata(version)
        except ResourceNotFoundError:
            return None  # incomplete (being published, or a publish that died)
        report = sorted(name[len("report/"):] for name in self.store.list_files(version)
                        if name.startswith("report/") and name.endswith(".png"))
        with self._metadata_lock:
            self._metadata[version] = (metadata, report)
            while len(self._metadata) > 256:
                self._metadata.popitem(last=False)
        return metadata, report

    # --- drift --------------------------------------------------------------------------

    def drift(self, now: datetime | None = None, cached: bool = True) -> dict[str, Any]:
        """PSI of the score and of each feature, live (a hash sample of the last
        ``DRIFT_WINDOW_HOURS``) vs the serving version's reference. ``status`` says why there
        is no figure: no_model, no_reference, too_few_rows."""
        now = now or self.clock()
        current = (self.store.read_pointer() or {}).get("version")
        if not current:
            return {"status": "no_model", "max_psi": None}
        if cached and self._drift is not None:
            computed, version, result = self._drift
            if version == current and time.monotonic() - computed < DRIFT_CACHE_SECONDS:
                return result
        result = self._measure(current, now)
        self._drift = (time.monotonic(), current, result)
        return result

    def _measure(self, version: str, now: datetime) -> dict[str, Any]:
        from ..model import spec_of
        from .publishing import features_of

        started = time.perf_counter()
        s = self.settings
        found = self._describe(version)
        metadata = found[0] if found else {}
        reference = metadata.get("reference")
        until = naive_utc(now)
        since = until - timedelta(hours=s.drift_window_hours)
        base = {"model_version": version, "window_hours": s.drift_window_hours, "since": since, "until": until,
                "min_rows": DRIFT_MIN_ROWS, "threshold": s.drift_retrain_psi}
        if not reference:
            return {**base, "status": "no_reference", "max_psi": None,
                    "message": "this version was published without a drift reference"}
        total, sample = self.queries.sample(since, until, s.drift_sample_rows)
        if len(sample) < DRIFT_MIN_ROWS:
            return {**base, "status": "too_few_rows", "max_psi": None, "window_rows": total,
                    "sample_rows": len(sample)}
        spec = spec_of(metadata)
        frame = self.data.rows_for_ids([row["transaction_id"] for row in sample], spec.aggregates())
        features = features_of(frame, spec)
        scores = [row["fraud_probability"] for row in sample if row["model_version"] == version
                  and not row["degraded"] and row["fraud_probability"] is not None]
        result = compare(reference, {name: features[name].to_numpy() for name in spec.names}, scores,
                         min_rows=DRIFT_MIN_ROWS)
        return {**base, **result, "status": "ok", "window_rows": total, "sample_rows": len(frame),
                "scored_rows": len(scores), "reference_rows": reference.get("rows"),
                "reference_source": reference.get("source"), "seconds": round(time.perf_counter() - started, 3)}

    # --- health -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        if self.queues is None:
            return {"error": "queues not configured"}
        return {"queue_depth": self.queues.depth(), "poison_depth": self.queues.poison_depth(),
                "poison": self.queues.poison_messages(POISON_SHOWN)}


class StorageQueues:
    """Depths of the transactions queue and its poison queue, and the newest poison messages."""

    def __init__(self, queue: Any, poison: Any):
        self.queue, self.poison = queue, poison  # QueueClients; ``poison`` returns raw (base64) text

    def depth(self) -> int:
        return int(self.queue.get_queue_properties().approximate_message_count)

    def poison_depth(self) -> int:
        return int(self.poison.get_queue_properties().approximate_message_count)

    def poison_messages(self, limit: int) -> list[dict[str, Any]]:
        """Up to 32 messages peeked (peeking changes nothing), newest first, each with what is wrong."""
        from ..cli import describe_poison_message

        found = []
        for message in self.poison.peek_messages(max_messages=32):
            valid, problem = describe_poison_message(message.content)
            found.append({"id": message.id, "inserted_on": message.inserted_on, "dequeue_count": message.dequeue_count,
                          "size": len(message.content or ""), "valid_items": valid, "reason": problem})
        found.sort(key=lambda m: m["inserted_on"] or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
        return found[:limit]


def summary(metadata: dict[str, Any], report: list[str], status: str) -> dict[str, Any]:
    """What the console shows of a version."""
    gate = metadata.get("gate") or {}
    bands = metadata.get("bands") or {}
    sampling = metadata.get("sampling") or {}
    comparison = (gate.get("holdout") or {}) if isinstance(gate.get("holdout"), dict) else {}
    return {
        "version": metadata.get("version"), "status": status, "created_at": metadata.get("created_at"),
        "metrics": {k: v for k, v in (metadata.get("metrics") or {}).items() if k in METRIC_KEYS},
        "validation_metrics": {k: v for k, v in (metadata.get("validation_metrics") or {}).items()
                               if k in METRIC_KEYS},
        "threshold": metadata.get("threshold"), "threshold_rule": metadata.get("threshold_rule"),
        "review_threshold": bands.get("review_threshold"), "decline_threshold": bands.get("decline_threshold"),
        "gate": {"promoted": gate.get("promoted"), "reason": gate.get("reason"),
                 "champion_version": gate.get("champion_version"),
                 "difference": comparison.get("difference") if isinstance(comparison, dict) else None}
        if gate else None,
        "windows": metadata.get("windows"), "training_rows": metadata.get("training_rows"),
        "validation_rows": metadata.get("validation_rows"), "holdout_rows": metadata.get("holdout_rows"),
        "population": sampling.get("population") if isinstance(sampling, dict) else None,
        "features": len(metadata.get("features") or []), "has_reference": bool(metadata.get("reference")),
        "compiled": bool(metadata.get("onnx")), "signed": bool(metadata.get("signature")), "report": report,
    }


def drift_summary(report: dict[str, Any]) -> dict[str, Any]:
    """What a training run records of a drift measurement (shared.usecases.retraining)."""
    keys = ("status", "model_version", "window_hours", "window_rows", "sample_rows", "scored_rows", "max_psi",
            "max_feature", "level", "message", "seconds")
    found = {k: report[k] for k in keys if k in report}
    found["psi"] = {part["name"]: _round(part["psi"]) for part in report.get("features", [])}
    if report.get("score"):
        found["psi"]["score"] = _round(report["score"]["psi"])
    if found.get("max_psi") is not None:
        found["max_psi"] = _round(found["max_psi"])
    return jsonable(found)


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 5)


def _timed(name: str, part: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    try:
        value = part()
    except QueryTimeout as exc:
        log.warning("console: %s timed out (%s)", name, exc)
        value = {"error": f"timed out: {exc}", "timeout": True}
    except Exception as exc:  # one panel failing must not take the others down
        log.warning("console: %s failed (%s: %s)", name, type(exc).__name__, str(exc)[:200])
        value = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return value, round((time.perf_counter() - started) * 1000, 1)


def jsonable(value: Any) -> Any:
    """Datetimes as ISO-8601 UTC, NaN/inf as null, tuples as lists."""
    if isinstance(value, datetime):
        return naive_utc(value).isoformat() + "Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return jsonable(value.item())
    return value
