"""The console page renders every panel from a snapshot, escapes whatever the data holds and
carries no inline script or style (the Content-Security-Policy forbids both)."""
import re

from shared.console.page import render

EVIL = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def snapshot(**overrides):
    base = {
        "generated_at": "2026-12-01T10:00:00Z", "window": "hour", "timings_ms": {"models": 3.0},
        "models": {"current": "v2", "promoted_at": "2026-12-01T09:00:00Z", "reason": EVIL, "rollback_to": "v1",
                   "total_versions": 2, "versions": [
                       {"version": "v2", "status": "serving", "metrics": {"auc_roc": 0.91, "average_precision": 0.7},
                        "gate": {"promoted": True, "reason": EVIL}, "windows": {"train": {"start": "a", "end": "b"}},
                        "report": ["pr_curve.png"], "training_rows": 10},
                       {"version": "v1", "status": "previous", "metrics": {}, "gate": None, "report": []}]},
        "runs": {"counts": {"skipped": 1}, "runs": [
            {"id": 1, "started_at": "2026-12-01T08:00:00Z", "finished_at": None, "trigger": "timer",
             "status": "skipped", "reason": EVIL, "new_labels": 3, "model_version": None, "metrics": {},
             "drift": {"max_psi": 0.3, "max_feature": EVIL}}]},
        "traffic": {"transactions": 10, "scored": 10, "degraded": 0, "mean_score": 0.1,
                    "decisions": {"approve": 9, EVIL: 1}, "rules": {EVIL: 1}, "since": "s", "until": "u",
                    "volume": {"edges": ["2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z"], "counts": [10]},
                    "score_histogram": {"edges": [0, 0.5, 1], "counts": [9, 1]}},
        "drift": {"status": "ok", "max_psi": 0.3, "max_feature": EVIL, "level": "major", "model_version": "v2",
                  "features": [{"name": EVIL, "psi": 0.3, "level": "major", "reference": [0.5, 0.5],
                                "live": [0.2, 0.8], "rows": 600}], "score": None},
        "outcomes": {"coverage": 0.5, "transactions": 10, "since": "s", "versions": [
            {"model_version": EVIL, "rows": 10, "labeled": 5, "coverage": 0.5, "frauds": 1, "decline_precision": 1.0,
             "decline_recall": 1.0, "flag_precision": None, "flag_recall": None}]},
        "health": {"queue_depth": 0, "poison_depth": 1, "poison": [{"id": EVIL, "inserted_on": "t",
                                                                     "dequeue_count": 5, "size": 3, "reason": EVIL}]},
        "review": {"mode": "review", "limit": 50, "transactions": [
            {"transaction_id": "t-1", "timestamp": "2026-12-01T09:59:00Z", "customer_id": EVIL, "terminal_id": EVIL,
             "amount": 5.0, "fraud_probability": 0.6, "decision": "review", "rule": EVIL,
             "reasons": [{"text": EVIL}]}]},
    }
    base.update(overrides)
    return base


def test_everything_from_the_data_is_escaped():
    page = render(snapshot(), "/api/console", 'k"ey<')
    assert "<script>alert" not in page and "<img src=x" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 10
    assert 'data-key="k&quot;ey&lt;"' in page and "code=k%22ey%3C" in page


def test_no_inline_script_or_style():
    page = render(snapshot(), "/api/console", "key")
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts == ['<script src="/api/console/static/console.js?code=key" defer>']
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page.replace("onerror=alert(2)", ""))


def test_every_panel_is_there_and_a_failed_one_says_so():
    page = render(snapshot(traffic={"error": "timed out: query cancelled after 5000 ms", "timeout": True}),
                  "/api/console", "")
    for panel in ("models", "runs", "traffic", "drift", "outcomes", "health", "review"):
        assert f'id="{panel}"' in page
    assert "could not be read: timed out" in page
    assert "?code=" not in page  # no key (keys not enforced): none is put in links
    assert 'data-action="rollback"' in page and 'data-action="promote" data-version="v1"' in page
    assert 'data-action="label" data-fraud="true" data-transaction="t-1"' in page


def test_drift_without_a_figure_says_why():
    for status, words in (("no_model", "No model"), ("no_reference", "without a drift reference"),
                          ("too_few_rows", "are needed for a PSI")):
        page = render(snapshot(drift={"status": status, "model_version": "v2", "sample_rows": 3,
                                      "window_hours": 168, "min_rows": 500}), "/api/console", "")
        assert words in page
