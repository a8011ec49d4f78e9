"""Application Insights metrics: nothing imported, sent or failing without a connection string;
with one, decisions, scores, latency and drift are recorded on the OpenTelemetry instruments."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import predict_function
from harness.app import http_request
from shared import telemetry

ROOT = Path(__file__).resolve().parents[2]
TX = {"customer_id": "C1", "terminal_id": "T1", "amount": 12.5}


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """Each test configures telemetry as a fresh process would (the module keeps one per process)."""
    monkeypatch.setattr(telemetry, "_configured", None)


def test_without_a_connection_string_nothing_is_imported_and_predict_works():
    code = ("import os, sys; os.environ.pop('APPLICATIONINSIGHTS_CONNECTION_STRING', None)\n"
            "from shared.config import Settings\nfrom shared.wiring import Wiring\n"
            "import predict_function\n"
            "t = Wiring(Settings.from_env({})).telemetry\n"
            "print(type(t).__name__, t.enabled, sorted(m for m in sys.modules if m.startswith(('azure.monitor', "
            "'opentelemetry'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Telemetry False []"


def test_the_no_op_records_nothing_and_never_fails(app_with_model):
    assert app_with_model.telemetry.enabled is False
    response = predict_function.main(http_request(TX))
    assert response.status_code == 200
    telemetry.Telemetry().drift({"features": [{"name": "amount", "psi": 0.3}]})


def test_with_a_connection_string_the_distro_is_configured_once_for_metrics_only():
    calls = []
    first = telemetry.telemetry_for("InstrumentationKey=00000000-0000-0000-0000-000000000000",
                                    configure=lambda **kw: calls.append(kw))
    second = telemetry.telemetry_for("InstrumentationKey=00000000-0000-0000-0000-000000000000",
                                     configure=lambda **kw: calls.append(kw))
    assert first is second and first.enabled and len(calls) == 1
    options = calls[0]
    assert options["connection_string"].startswith("InstrumentationKey=")
    assert options["disable_tracing"] and options["disable_logging"] and not options["enable_live_metrics"]
    assert {name for name, o in options["instrumentation_options"].items() if not o["enabled"]} >= {
        "azure_sdk", "requests", "psycopg2"}
    assert {v._instrument_name for v in options["views"]} == {"fraud.score", "fraud.predict.duration"}


def test_a_configuration_that_fails_leaves_the_no_op():
    def broken(**_):
        raise RuntimeError("no network")

    assert telemetry.telemetry_for("InstrumentationKey=x", configure=broken).enabled is False


def test_the_real_distro_configures_and_exports_to_a_local_ingestion_endpoint():
    """configure_azure_monitor itself, pointed at a local HTTP server standing in for ingestion."""
    code = r'''
import http.server, threading, json, gzip
hits = []
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try: body = gzip.decompress(body)
        except OSError: pass
        hits.append((self.path, body))
        out = json.dumps({"itemsReceived": 1, "itemsAccepted": 1, "errors": []}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out))); self.end_headers(); self.wfile.write(out)
    def log_message(self, *a): pass
server = http.server.HTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=server.serve_forever, daemon=True).start()
import os
os.environ["APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"] = "true"
from shared import telemetry
port = server.server_address[1]
t = telemetry.telemetry_for(f"InstrumentationKey=00000000-0000-0000-0000-000000000001;"
                            f"IngestionEndpoint=http://127.0.0.1:{port}/")
assert t.enabled
t.drift({"model_version": "v1", "features": [{"name": "amount", "psi": 0.31}], "score": {"name": "score", "psi": 0.02}})
from opentelemetry import metrics
metrics.get_meter_provider().force_flush()
text = b"".join(b for _, b in hits).decode("utf-8", "replace")
print("fraud.drift.psi" in text, "amount" in text)
'''
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True True", out.stdout + out.stderr[-2000:]


def test_predictions_and_drift_are_recorded_on_the_instruments(app_with_model, monkeypatch):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], views=telemetry.views())
    recorder = telemetry.MeterTelemetry(provider)
    monkeypatch.setitem(app_with_model.__dict__, "telemetry", recorder)
    answers = [predict_function.main(http_request({**TX, "amount": 10.0 + i})) for i in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    replay = predict_function.main(http_request({**TX, "transaction_id": "same-1"}))
    again = predict_function.main(http_request({**TX, "transaction_id": "same-1"}))
    assert replay.status_code == again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true"
    recorder.drift({"model_version": "v1", "features": [{"name": "amount", "psi": 0.31},
                                                        {"name": "is_night", "psi": None}],
                    "score": {"name": "score", "psi": 0.02}})
    found = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = list(metric.data.data_points)
    decisions = sum(p.value for p in found["fraud.decisions"])
    assert decisions == 6  # the replay is not counted twice
    assert {p.attributes["rule"] for p in found["fraud.decisions"]} == {"model"}
    [scores] = found["fraud.score"]
    assert scores.count == 6 and list(scores.explicit_bounds) == telemetry.SCORE_BOUNDARIES
    [latency] = found["fraud.predict.duration"]
    assert latency.count == 6 and latency.sum > 0
    psi = {p.attributes["feature"]: p.value for p in found["fraud.drift.psi"]}
    assert psi == {"amount": 0.31, "score": 0.02}
