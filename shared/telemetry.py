"""Custom metrics for Application Insights: decisions, scores, predict latency, drift.

With ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set, the Azure Monitor OpenTelemetry distro
(``azure-monitor-opentelemetry``) is configured once per process, for metrics only (the
Functions host already sends requests, traces and logs), and the instruments below export
to the resource's ``customMetrics`` every 60 s. Authentication follows the app settings:
``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` (``Authorization=AAD``) is read by the
exporter. Without the connection string nothing is imported, nothing is sent and every
call is a no-op. Recording never raises into the caller.

Instruments (all under the meter ``fraud_detection``):

* ``fraud.decisions`` counter: one per answered prediction, by ``decision``, ``rule``
  (``model`` when the model decided), ``degraded`` and ``model_version``;
* ``fraud.score`` histogram: fraud probability, bins of 0.05, by ``model_version``;
* ``fraud.predict.duration`` histogram: predict's handling time in ms;
* ``fraud.drift.psi`` gauge: PSI per ``feature`` (and ``score``) at each retrain tick, by ``model_version``.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

METER = "fraud_detection"
SCORE_BOUNDARIES = [round(0.05 * i, 2) for i in range(1, 20)]
LATENCY_BOUNDARIES_MS = [1, 2, 3, 5, 10, 20, 50, 100, 250, 500, 1000, 2500, 5000]
# Only metrics: the host sends requests and logs already, and the instrumentations would trace
# every storage and database call of predict.
DISABLED_INSTRUMENTATIONS = ("azure_sdk", "django", "fastapi", "flask", "psycopg2", "requests", "urllib", "urllib3")


class Telemetry:
    """The no-op default (no connection string)."""

    enabled = False

    def scored(self, prediction: Any, seconds: float) -> None:
        """One answered prediction (shared.usecases.scoring.Prediction) and its handling time."""

    def drift(self, report: dict[str, Any]) -> None:
        """One drift measurement (shared.usecases.monitoring.Monitoring.drift)."""


class MeterTelemetry(Telemetry):
    """Records on OpenTelemetry instruments of ``meter_provider`` (the global one by default)."""

    enabled = True

    def __init__(self, meter_provider: Any = None):
        from opentelemetry import metrics

        meter = (meter_provider or metrics.get_meter_provider()).get_meter(METER)
        self.decisions = meter.create_counter("fraud.decisions", unit="1", description="answered predictions")
        self.scores = meter.create_histogram("fraud.score", unit="1", description="fraud probability")
        self.latency = meter.create_histogram("fraud.predict.duration", unit="ms",
                                              description="predict handling time")
        self.psi = meter.create_gauge("fraud.drift.psi", unit="1", description="population stability index")

    def scored(self, prediction: Any, seconds: float) -> None:
        try:
            if prediction.replayed:  # counted when it was first answered
                return
            scored = prediction.scored
            self.decisions.add(1, {"decision": scored.decision or ("decline" if scored.is_fraud else "approve"),
                                   "rule": scored.rule or "model", "degraded": bool(scored.degraded),
                                   "model_version": scored.model_version})
            self.scores.record(float(scored.fraud_probability), {"model_version": scored.model_version})
            self.latency.record(seconds * 1000.0)
        except Exception:  # telemetry must never fail a prediction
            log.debug("telemetry: prediction not recorded", exc_info=True)

    def drift(self, report: dict[str, Any]) -> None:
        try:
            version = report.get("model_version") or ""
            parts = list(report.get("features") or []) + ([report["score"]] if report.get("score") else [])
            for part in parts:
                if part.get("psi") is not None:
                    self.psi.set(float(part["psi"]), {"feature": part["name"], "model_version": version})
        except Exception:
            log.debug("telemetry: drift not recorded", exc_info=True)


def views() -> list[Any]:
    """Histogram bins that fit the values (OpenTelemetry's defaults are for durations in ms)."""
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    return [View(instrument_name="fraud.score", aggregation=ExplicitBucketHistogramAggregation(SCORE_BOUNDARIES)),
            View(instrument_name="fraud.predict.duration",
                 aggregation=ExplicitBucketHistogramAggregation(LATENCY_BOUNDARIES_MS))]


_configured: Telemetry | None = None
_configure_lock = threading.Lock()


def telemetry_for(connection_string: str, configure: Any = None) -> Telemetry:
    """The process's telemetry: a no-op without a connection string, else metrics through Azure
    Monitor (configured once per process; ``configure`` stands in for ``configure_azure_monitor``
    in tests). A configuration that fails is logged and leaves the no-op."""
    global _configured
    if not connection_string:
        return Telemetry()
    with _configure_lock:
        if _configured is None:
            try:
                if configure is None:
                    from azure.monitor.opentelemetry import configure_azure_monitor
                    configure = configure_azure_monitor
                configure(connection_string=connection_string, disable_tracing=True, disable_logging=True,
                          enable_live_metrics=False, enable_performance_counters=False, views=views(),
                          instrumentation_options={name: {"enabled": False} for name in DISABLED_INSTRUMENTATIONS})
                _configured = MeterTelemetry()
                log.info("telemetry: custom metrics go to Application Insights")
            except Exception as exc:
                log.error("telemetry: Application Insights not configured (%s); nothing is sent", type(exc).__name__)
                _configured = Telemetry()
        return _configured
