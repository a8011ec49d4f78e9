"""Timer trigger: retrain when enough new labels arrived; every run is recorded."""
import logging

import azure.functions as func

from shared.app import get_services
from shared.reporting import build_report
from shared.retraining import run_retraining


def main(timer: func.TimerRequest) -> None:
    if timer.past_due:
        logging.info("retrain timer is past due; running now")
    run = run_retraining(get_services(), trigger="timer", report_builder=build_report)
    logging.info("retrain: %s, %s", run.status, run.reason)
