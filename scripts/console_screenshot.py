"""docs/console.png: the console of a service with a history, as README shows it.

    .venv/bin/python scripts/console_screenshot.py [--out docs/console.png] [--rows 100000]

Starts Azurite, publishes a model with its report (and a challenger the gate rejected), records
a few training runs, stores simulated scored traffic of 35 days (older part labeled), puts one
message on the poison queue, serves the function app through the dev host with keys required,
and has Debian's headless chromium (Playwright) take a full-page screenshot.
"""
from __future__ import annotations

import argparse
import base64
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "docs" / "console.png"))
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from devhost import FunctionHost
    from harness.app import ModelFactory, configure_app
    from harness.console import store_scored, traffic
    from harness.servers import start_azurite
    from shared.storage.runs import TrainingRun

    work = Path(tempfile.mkdtemp(prefix="console-shot-"))
    azurite = start_azurite(work / "azurite")
    try:
        wiring = configure_app(None, azurite.connection_string, f"sqlite:///{work / 'fraud.db'}",
                               suffix=uuid.uuid4().hex[:8], RETRAIN_SCHEDULE="0 0 0 1 1 *")
        factory = ModelFactory()
        first = factory.publish(wiring.store, report=True)
        challenger = factory.publish(wiring.store, promote=False, report=True)
        now = datetime.now(timezone.utc)
        metrics = wiring.store.metadata(first)["metrics"]
        history = [("promoted", "challenger promoted: first model", first, 150),
                   ("rejected", "champion kept: average precision worse by 0.031 (90% interval -0.052..-0.011)",
                    challenger, 120)]
        history += [("skipped", f"{40 * i} new labeled transactions; retraining needs 1000", None, 110 - 6 * i)
                    for i in range(1, 15)]
        for status, reason, version, hours in history:
            run = TrainingRun(started_at=now - timedelta(hours=hours), trigger="timer", status=status, reason=reason,
                              model_version=version, metrics=metrics if version else None,
                              details={"drift": {"status": "ok", "max_psi": 0.04 + hours / 2000,
                                                 "max_feature": "amount", "level": "stable"}})
            run.finished_at = run.started_at + timedelta(minutes=1)
            wiring.runs.finish(run)
        model = wiring.store.load(first)
        store_scored(wiring, traffic(args.rows, 35, seed=4, prefix="tx-"), model, label_before=timedelta(days=7),
                     review_from=0.05)
        wiring.operator_poison_queue.send_message(base64.b64encode(b'{"transaction_id": "tx-x", "amount": "NaN"}')
                                                  .decode())
        key = "console-" + uuid.uuid4().hex
        settings = {"AzureWebJobs.retrain_function.Disabled": "true", "AzureWebJobs.persist_function.Disabled": "true",
                    "DEVHOST_REQUIRE_KEYS": "true", "DEVHOST_KEY_console_function": key}
        with FunctionHost(ROOT, settings=settings, port=0) as host, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                                 args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{host.base_url}/api/console?window=day&code={key}")
            page.wait_for_selector("body[data-ready=true]")
            page.wait_for_function("() => [...document.querySelectorAll('tr.plots:not([hidden]) img')]"
                                   ".every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        print(f"written {args.out}")
    finally:
        azurite.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
