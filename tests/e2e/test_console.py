"""The console in a real browser: Playwright drives Debian's chromium (headless) against the
real function folders served by the dev host with keys required, a real Azurite and SQLite.

Playwright never downloads a browser here: it launches /usr/bin/chromium (scripts/bootstrap.sh
installs it). Without chromium or Playwright these tests skip locally and fail in CI (CI=true).
"""
from __future__ import annotations

import hashlib
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from harness.console import store_scored, traffic
from harness.servers import in_ci
from shared.storage.schema import labels

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]
CONSOLE_KEY = "console-" + uuid.uuid4().hex
PREDICT_KEY = "predict-" + uuid.uuid4().hex
HOSTILE = '<img src=x onerror="window.__xss=1">'
# The console of a few hundred thousand stored transactions must answer within this (2 cores,
# SQLite); bench/console_bench.py measures the queries at 1M rows.
PAGE_BUDGET_SECONDS = 10


def _unavailable(message: str):
    if in_ci():
        pytest.fail(message + " (CI=true: the browser tests must run)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"playwright is not installed: {exc}")
    if not Path(CHROMIUM).is_file():
        _unavailable(f"{CHROMIUM} not found: install Debian's chromium (scripts/bootstrap.sh does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A browser page that records every console error, page error and failed request."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda error: self.problems.append(f"pageerror: {error}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))

    def close(self):
        self.context.close()


@pytest.fixture
def page(browser):
    opened = Page(browser)
    yield opened
    opened.close()


def _host(settings):
    from devhost import FunctionHost

    return FunctionHost(ROOT, settings={"AzureWebJobs.retrain_function.Disabled": "true",
                                        "AzureWebJobs.persist_function.Disabled": "true",
                                        "DEVHOST_REQUIRE_KEYS": "true", "DEVHOST_KEY_console_function": CONSOLE_KEY,
                                        "DEVHOST_KEY_predict_function": PREDICT_KEY, **settings}, port=0)


@pytest.fixture
def served(app_with_model, model_factory):
    """The app with 8,000 scored transactions of the last 10 days (older ones labeled), one of
    them with an attacker's customer id, and a second, not promoted, version with its report."""
    wiring = app_with_model
    model = wiring.store.load(wiring.store.current_version())
    frame = traffic(8000, 10, seed=21, prefix="ui-")
    store_scored(wiring, frame, model, label_before=timedelta(days=3), review_from=0.05)
    with wiring.engine.begin() as conn:
        conn.execute(sa.text("UPDATE transactions SET customer_id = :c WHERE transaction_id = ("
                             "SELECT max(transaction_id) FROM transactions WHERE decision = 'review')"), {"c": HOSTILE})
    second = model_factory.publish(wiring.store, promote=False, report=True)
    with _host({}) as host:
        yield host, wiring, second


def url(host, key=CONSOLE_KEY, **params):
    query = "&".join(f"{k}={v}" for k, v in {**({"code": key} if key else {}), **params}.items())
    return f"{host.base_url}/api/console" + (f"?{query}" if query else "")


def test_refused_without_the_consoles_key_and_loads_with_it(served, page):
    host, wiring, _ = served
    assert requests.get(f"{host.base_url}/api/console", timeout=30).status_code == 401
    assert requests.get(url(host, key=PREDICT_KEY), timeout=30).status_code == 401  # predict's key: no
    assert requests.get(f"{host.base_url}/api/console/monitoring", timeout=30).status_code == 401
    assert requests.post(f"{host.base_url}/api/console/models/rollback", json={}, timeout=30).status_code == 401
    assert requests.post(f"{host.base_url}/api/predict", json={}, params={"code": CONSOLE_KEY},
                         timeout=30).status_code == 401  # and the console's key scores nothing

    # The browser is refused too (an empty 401: chromium shows its own error page, so ask through
    # the page's request context), and gets in with the console's key.
    assert page.context.request.get(url(host, key=None)).status == 401
    assert page.context.request.get(url(host, key=PREDICT_KEY)).status == 401
    loaded = page.page.goto(url(host))
    assert loaded.status == 200
    headers = loaded.headers
    assert headers["x-content-type-options"] == "nosniff" and "script-src 'self'" in headers[
        "content-security-policy"]
    page.page.wait_for_selector("body[data-ready=true]")
    current = wiring.store.current_version()
    assert page.page.text_content("#serving-version") == current
    metrics = wiring.store.metadata(current)["metrics"]
    serving_row = page.page.locator(f'tr[data-version="{current}"]').first
    assert f'{metrics["average_precision"]:.3f}' in serving_row.text_content()
    assert f'{metrics["auc_roc"]:.3f}' in serving_row.text_content()
    for panel in ("models", "runs", "traffic", "drift", "outcomes", "health", "review"):
        assert page.page.locator(f"#{panel}").is_visible()
        assert "could not be read" not in page.page.locator(f"#{panel}").text_content(), panel
    # The serving version's plots load (with the key), and an attacker's text is only text.
    page.page.wait_for_function("() => [...document.querySelectorAll('tr.serving + tr.plots img')]"
                                ".every(i => i.complete && i.naturalWidth > 0)")
    assert HOSTILE in page.page.locator("#review").text_content()
    assert page.page.evaluate("() => window.__xss") is None
    assert page.problems == []


def test_the_review_action_records_a_console_label(served, page):
    host, wiring, _ = served
    page.page.goto(url(host, window="day"))
    page.page.wait_for_selector("body[data-ready=true]")
    row = page.page.locator("#review tr[data-transaction]").first
    transaction_id = row.get_attribute("data-transaction")
    row.locator("button[data-fraud=true]").click()
    assert page.page.locator("#confirm").is_visible()
    assert transaction_id in page.page.text_content("#confirm-text")
    page.page.click("#confirm-cancel")  # cancelled: nothing is recorded
    assert _label(wiring, transaction_id) is None
    row.locator("button[data-fraud=true]").click()
    page.page.click("#confirm-ok")
    page.page.wait_for_selector("#toast.ok")
    assert f"Labeled {transaction_id} as fraud" in page.page.text_content("#toast")
    stored = _label(wiring, transaction_id)
    assert stored is not None and (stored["is_fraud"], stored["source"]) == (True, "console")
    assert stored["key_id"] == hashlib.sha256(CONSOLE_KEY.encode()).hexdigest()[:12]
    page.page.reload()
    page.page.wait_for_selector("body[data-ready=true]")
    assert page.page.locator(f'#review tr[data-transaction="{transaction_id}"]').count() == 0
    assert page.problems == []


def _label(wiring, transaction_id):
    with wiring.engine.connect() as conn:
        row = conn.execute(sa.select(labels).where(labels.c.transaction_id == transaction_id)).mappings().first()
    return dict(row) if row else None


def test_promote_and_rollback_after_confirmation(served, page):
    host, wiring, second = served
    first = wiring.store.current_version()
    page.page.goto(url(host))
    page.page.wait_for_selector("body[data-ready=true]")
    # The other version's plots on demand.
    page.page.click(f'button[data-action=plots][data-version="{second}"]')
    page.page.wait_for_function(f"() => [...document.querySelectorAll('tr[data-plots=\"{second}\"] img')]"
                                ".every(i => i.complete && i.naturalWidth > 0)")
    promote = page.page.locator(f'button[data-action=promote][data-version="{second}"]')
    promote.click()
    page.page.click("#confirm-cancel")
    assert wiring.store.current_version() == first
    promote.click()
    with page.page.expect_navigation():
        page.page.click("#confirm-ok")
    page.page.wait_for_selector("body[data-ready=true]")
    assert wiring.store.current_version() == second
    assert page.page.text_content("#serving-version") == second
    page.page.click("button[data-action=rollback]")
    assert first in page.page.text_content("#confirm-text")
    with page.page.expect_navigation():
        page.page.click("#confirm-ok")
    page.page.wait_for_selector("body[data-ready=true]")
    assert wiring.store.current_version() == first
    assert page.page.text_content("#serving-version") == first
    assert page.problems == []


# --- many stored transactions ---------------------------------------------------------------------

BIG_ROWS = int(os.environ.get("CONSOLE_E2E_ROWS", "200000"))


@pytest.mark.slow
def test_usable_with_many_stored_transactions(app_with_model, browser, tmp_path):
    wiring = app_with_model
    model = wiring.store.load(wiring.store.current_version())
    started = time.monotonic()
    stored = store_scored(wiring, traffic(BIG_ROWS, 35, seed=8, prefix="big-"), model,
                          label_before=timedelta(days=7), review_from=0.05)
    print(f"stored {stored.rows} rows in {time.monotonic() - started:.0f} s")
    page = Page(browser)
    try:
        with _host({}) as host:
            for window in ("hour", "day"):
                began = time.monotonic()
                answer = page.page.goto(url(host, window=window))
                page.page.wait_for_selector("body[data-ready=true]")
                took = time.monotonic() - began
                print(f"page ({window}) with {stored.rows} rows: {took:.2f} s")
                assert answer.status == 200 and took < PAGE_BUDGET_SECONDS
                for panel in ("models", "traffic", "drift", "outcomes", "review"):
                    assert "could not be read" not in page.page.locator(f"#{panel}").text_content(), panel
            assert page.page.text_content("#traffic-total").replace(",", "").isdigit()
            timings = requests.get(f"{host.base_url}/api/console/monitoring", params={"window": "day"},
                                   headers={"x-functions-key": CONSOLE_KEY}, timeout=60).json()["timings_ms"]
            print("panel timings (ms):", timings)
            assert max(timings.values()) < PAGE_BUDGET_SECONDS * 1000
            shot = os.environ.get("CONSOLE_SCREENSHOT")
            if shot:  # docs/console.png: CONSOLE_SCREENSHOT=docs/console.png pytest -k many_stored
                page.page.screenshot(path=shot, full_page=True)
        assert page.problems == []
    finally:
        page.close()
