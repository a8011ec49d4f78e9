"""The console function in process (real Azurite, SQLite): its JSON, its actions, its headers,
the monitoring queries' deadline, and drift in the retrain timer's runs."""
from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

import console_function
from harness.console import store_scored, traffic
from shared.console import SECURITY_HEADERS
from shared.model import LoadedModel, pipeline_scorer
from shared.storage.monitoring import MonitoringQueries, QueryTimeout, Window
from shared.storage.schema import label_events, labels
from shared.usecases.publishing import package_candidate

KEY = "console-test-key"


def call(path: str = "", method: str = "GET", body=None, params=None, key: str | None = KEY):
    """The console function as the host invokes it for /api/console/<path>."""
    import azure.functions as func

    headers = {"x-functions-key": key} if key else {}
    data = b""
    if body is not None:
        headers["content-type"] = "application/json"
        data = json.dumps(body).encode()
    url = f"http://localhost/api/console/{path}".rstrip("/")
    request = func.HttpRequest(method=method, url=url, headers=headers, params=params or {},
                               route_params={"path": path} if path else {}, body=data)
    return console_function.main(request)


def as_json(response):
    return json.loads(response.get_body())


@pytest.fixture
def console(app_with_model, model_factory):
    """An app with a promoted model and 6,000 scored transactions of the last 10 days (older
    ones labeled), as the service would have stored them."""
    wiring = app_with_model
    version = wiring.store.current_version()
    model = wiring.store.load(version)
    frame = traffic(6000, 10, seed=3, prefix="con-")
    stored = store_scored(wiring, frame, model, label_before=timedelta(days=3), review_from=0.05)
    return wiring, stored


def test_the_snapshot_has_every_panel_with_figures(console):
    wiring, stored = console
    response = call("monitoring", params={"window": "day"})
    assert response.status_code == 200, response.get_body()[:300]
    snapshot = as_json(response)
    assert set(snapshot) >= {"models", "runs", "traffic", "drift", "outcomes", "health", "review", "timings_ms"}
    for name in ("models", "runs", "traffic", "drift", "outcomes", "health", "review"):
        assert "error" not in snapshot[name], (name, snapshot[name])
    models = snapshot["models"]
    current = wiring.store.current_version()
    assert models["current"] == current
    [serving] = [v for v in models["versions"] if v["status"] == "serving"]
    assert serving["metrics"]["average_precision"] == pytest.approx(wiring.store.metadata(current)["metrics"]
                                                                    ["average_precision"])
    assert serving["has_reference"] and serving["training_rows"] > 0
    day = snapshot["traffic"]
    assert 0 < day["transactions"] < stored.rows and sum(day["volume"]["counts"]) == day["transactions"]
    assert sum(day["score_histogram"]["counts"]) == day["scored"] == day["transactions"]
    assert sum(day["decisions"].values()) == day["transactions"]
    outcomes = snapshot["outcomes"]
    assert outcomes["transactions"] == stored.rows and outcomes["labeled"] == stored.labeled
    [scored_by] = outcomes["versions"]
    assert scored_by["model_version"] == current and 0 < scored_by["coverage"] < 1
    drift = snapshot["drift"]
    assert drift["status"] == "ok" and drift["model_version"] == current, drift
    assert {p["name"] for p in drift["features"]} == set(model_features(wiring))
    assert drift["max_psi"] == max(p["psi"] for p in [*drift["features"], drift["score"]] if p["psi"] is not None)
    review = snapshot["review"]
    assert review["mode"] == "review"
    assert all(t["decision"] == "review" for t in review["transactions"])
    assert snapshot["health"] == {"queue_depth": 0, "poison_depth": 0, "poison": []}


def model_features(wiring):
    return wiring.store.metadata(wiring.store.current_version())["features"]


def test_the_page_is_escaped_html_with_the_security_headers(console):
    wiring, _ = console
    hostile = '<img src=x onerror="alert(1)">'
    with wiring.engine.begin() as conn:  # attacker-controlled text a transaction may carry
        conn.execute(sa.text("UPDATE transactions SET customer_id = :c, rule = :r WHERE decision = 'review'"),
                     {"c": hostile, "r": "rule:<script>x</script>"})
    response = call("", params={"window": "hour", "code": KEY})
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_body().decode()
    assert hostile not in page and "<script>x</script>" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert "<script>" not in page.replace('<script src="/api/console/static/console.js?code=' + KEY + '" defer>',
                                          "")
    assert "style=" not in page and "<style" not in page and "onclick" not in page
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def test_assets_errors_and_reports_carry_the_headers_too(console, model_factory):
    wiring, _ = console
    for path, mimetype in (("static/console.js", "text/javascript"), ("static/console.css", "text/css")):
        response = call(path)
        assert response.status_code == 200 and response.mimetype == mimetype
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    missing = call("static/other.js")
    assert missing.status_code == 404 and as_json(missing)["errors"][0]["field"] == "path"
    assert missing.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    assert call("monitoring", params={"window": "week"}).status_code == 400
    # A version with a report: its plots are served as PNG, other names are not found.
    version = model_factory.publish(wiring.store, promote=False, report=True)
    png = call(f"models/{version}/report/pr_curve.png")
    assert png.status_code == 200 and png.mimetype == "image/png" and png.get_body()[:4] == b"\x89PNG"
    assert call(f"models/{version}/report/nothing.png").status_code == 404
    assert call("models/../report/pr_curve.png").status_code == 404


def test_review_labels_go_through_the_labels_use_case_with_source_console(console):
    wiring, _ = console
    review = as_json(call("monitoring"))["review"]["transactions"]
    assert review, "the fixture stores reviewed transactions"
    target = review[0]["transaction_id"]
    response = call("labels", "POST", {"labels": [{"transaction_id": target, "is_fraud": True}]})
    assert response.status_code == 200 and as_json(response) == {"received": 1, "stored": 1}
    with wiring.engine.connect() as conn:
        row = conn.execute(sa.select(labels).where(labels.c.transaction_id == target)).mappings().one()
        event = conn.execute(sa.select(label_events).where(label_events.c.transaction_id == target)
                             .order_by(label_events.c.id.desc())).mappings().first()
    fingerprint = hashlib.sha256(KEY.encode()).hexdigest()[:12]
    assert (row["is_fraud"], row["source"], row["key_id"]) == (True, "console", fingerprint)
    assert (event["source"], event["key_id"]) == ("console", fingerprint)
    # Labeled: it leaves the queue.
    assert target not in [t["transaction_id"] for t in as_json(call("monitoring"))["review"]["transactions"]]
    # The console cannot name another source, and bad labels are 400 naming the field.
    refused = call("labels", "POST", {"source": "chargebacks", "labels": [{"transaction_id": target,
                                                                          "is_fraud": False}]})
    assert refused.status_code == 400 and as_json(refused)["errors"][0]["field"] == "source"
    bad = call("labels", "POST", {"labels": [{"transaction_id": "x" * 70, "is_fraud": "yes"}]})
    assert bad.status_code == 400 and {e["field"] for e in as_json(bad)["errors"]} >= {"labels[0].transaction_id"}


def test_promote_verifies_and_rollback_goes_back(console, model_factory):
    wiring, _ = console
    store = wiring.store
    first = store.current_version()
    second = model_factory.publish(store, promote=False)
    assert call("models/promote", "POST", {"version": "no-such-version"}).status_code == 404
    assert call("models/promote", "POST", {"version": "../x"}).status_code == 400
    assert call("models/promote", "POST", {"version": second, "extra": 1}).status_code == 400
    promoted = call("models/promote", "POST", {"version": second})
    assert promoted.status_code == 200 and as_json(promoted) == {"version": second, "previous": first}
    assert store.current_version() == second and "console" in store.read_pointer()["reason"]
    rolled = call("models/rollback", "POST", {})
    assert rolled.status_code == 200 and as_json(rolled) == {"version": first, "previous": second}
    assert store.current_version() == first
    # Nothing earlier than the first: a conflict, nothing changes.
    nothing = call("models/rollback", "POST", {})
    assert nothing.status_code == 409 and store.current_version() == first
    # A tampered version is refused as predict would refuse it.
    third = model_factory.publish(store, promote=False)
    store.container.upload_blob(f"versions/{third}/model.joblib", b"tampered", overwrite=True)
    refused = call("models/promote", "POST", {"version": third})
    assert refused.status_code == 409 and "verification" in as_json(refused)["message"]
    assert store.current_version() == first


def test_health_shows_the_poison_queue(console):
    wiring, _ = console
    poison = wiring.operator_poison_queue
    poison.send_message(base64.b64encode(b'{"transaction_id": "p1"}').decode())
    poison.send_message("%%% not base64 %%%")
    health = as_json(call("monitoring"))["health"]
    assert health["poison_depth"] == 2 and len(health["poison"]) == 2
    reasons = " ".join(m["reason"] for m in health["poison"])
    assert "not base64" in reasons and "p1" not in health["poison"][0]["id"]
    assert health["poison"][0]["inserted_on"] >= health["poison"][1]["inserted_on"]  # newest first


def test_a_query_past_its_deadline_is_cancelled_and_its_panel_says_so(console, monkeypatch):
    wiring, _ = console
    queries = MonitoringQueries(wiring.engine, timeout_ms=1)
    slow = sa.text("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000000) "
                   "SELECT count(*) FROM n")
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        queries._run(lambda conn: conn.execute(slow).scalar())
    assert time.monotonic() - started < 2
    # In the snapshot: that panel reports the timeout, the others answer.
    monkeypatch.setattr(wiring.monitoring.queries, "traffic",
                        lambda window: queries._run(lambda conn: conn.execute(slow).scalar()))
    snapshot = as_json(call("monitoring"))
    assert snapshot["traffic"]["timeout"] is True and "timed out" in snapshot["traffic"]["error"]
    assert "error" not in snapshot["models"] and "error" not in snapshot["outcomes"]
    assert "timed out" in call("").get_body().decode()


def test_traffic_counts_each_row_once_on_the_window_edges(app_env):
    from shared.storage.engines import utcnow
    from shared.storage.transactions import transaction_row as row

    now = utcnow().replace(microsecond=0)
    window = Window(now - timedelta(hours=1), now, 12)

    rows = [row(f"edge-{i}", when, "c", "t", 1.0, now, fraud_probability=p, decision="approve")
            for i, (when, p) in enumerate([(window.since, 0.0), (now - timedelta(seconds=1), 1.0),
                                           (now, 0.5), (window.since - timedelta(seconds=1), 0.05)])]
    app_env.transactions.add_rows(rows)
    found = MonitoringQueries(app_env.engine, 5000).traffic(window)
    assert found["transactions"] == 2 and sum(found["volume"]["counts"]) == 2
    assert found["score_histogram"]["counts"][0] == 1 and found["score_histogram"]["counts"][-1] == 1


# --- drift in the retrain timer's runs ---------------------------------------------------------


def test_every_run_records_drift_and_drift_retrains_below_the_threshold(app_with_model, model_factory):
    from shared.operations import import_history

    wiring = app_with_model
    import_history(wiring, model_factory.history)
    report = {"status": "ok", "model_version": "v", "max_psi": 0.05, "max_feature": "amount", "features": []}

    def run(**settings):
        return retrain_with(wiring, report, model_factory, **{"retrain_threshold": 10**6, **settings})

    quiet = run()
    assert quiet.status == "skipped", quiet.reason
    assert quiet.details["drift"]["max_psi"] == 0.05 and "drift" not in quiet.reason
    report.update(max_psi=0.4)
    drifted = run()  # labels are new (never trained on), drift is major: retrained below the threshold
    assert drifted.status in ("promoted", "rejected"), drifted.reason
    assert drifted.reason.startswith("retrained on drift: PSI 0.400 (amount) >= DRIFT_RETRAIN_PSI 0.25 with "
                                     f"{len(model_factory.history)} new labeled transactions; ")
    assert drifted.details["retrain_reason"] in drifted.reason
    recorded = wiring.runs.recent(1)[0]
    assert recorded["reason"] == drifted.reason and recorded["details"]["drift"]["max_psi"] == 0.4
    # The same labels again: drift alone does not retrain (it would learn nothing new).
    again = run()
    assert again.status == "skipped" and "no new labeled transaction to learn from" in again.reason
    # 0 turns the drift trigger off.
    with wiring.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM training_runs"))
    off = run(drift_retrain_psi=0.0)
    assert off.status == "skipped" and off.details["drift"]["max_psi"] == 0.4 and "retrain_reason" not in off.details


def test_a_drift_measurement_that_fails_never_fails_the_run(console, model_factory):
    wiring, _ = console

    def broken():
        raise RuntimeError("storage down")

    run = retrain_with(wiring, None, model_factory, drift=broken, retrain_threshold=10**6)
    assert run.status == "skipped" and run.details["drift"]["status"] == "failed"


def retrain_with(wiring, report, model_factory, drift=None, **settings):
    import dataclasses

    from harness.app import SMALL_PARAMS
    from shared.usecases.retraining import Retraining, RetrainingSettings

    retraining = Retraining(wiring.labels, wiring.runs, wiring.training_data, wiring.store,
                            dataclasses.replace(RetrainingSettings.from_settings(wiring.settings), **settings),
                            spec=wiring.spec, params=SMALL_PARAMS, report_builder=None,
                            drift=drift or (lambda: dict(report)))
    return retraining.run(trigger="test")


def test_the_timer_measures_real_drift_with_the_serving_models_reference(console):
    from azure.functions.timer import TimerRequest

    import retrain_function

    wiring, _ = console
    retrain_function.main(TimerRequest(past_due=False))
    [run] = wiring.runs.recent(1)
    drift = run["details"]["drift"]
    assert drift["status"] == "ok" and drift["model_version"] == wiring.store.current_version()
    assert set(drift["psi"]) == {*model_features(wiring), "score"} and drift["sample_rows"] >= 500


def test_a_published_version_carries_its_drift_reference(model_factory):
    package = package_candidate(model_factory.candidate, model_factory.params, "max_f1", "")
    reference = package.metadata["reference"]
    assert reference["source"] == "holdout" and reference["rows"] == len(model_factory.candidate.holdout)
    assert set(reference["features"]) == set(model_factory.candidate.features)
    for part in [reference["score"], *reference["features"].values()]:
        assert len(part["shares"]) == len(part["edges"]) + 1 and sum(part["shares"]) == pytest.approx(1.0)
    # The holdout compared with itself does not drift.
    from shared.drift import compare

    holdout = model_factory.candidate.holdout
    model = LoadedModel(package.version, package.metadata, pipeline_scorer(model_factory.candidate.pipeline))
    same = compare(reference, {n: holdout[n].to_numpy() for n in model.features},
                   model_factory.candidate.holdout_scores(), min_rows=100)
    assert same["max_psi"] < 0.05, same["max_feature"]
