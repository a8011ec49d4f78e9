"""Timer trigger: retrain when enough new labels arrived; every run is recorded."""
import logging

import azure.functions as func

from shared.wiring import get_wiring


def main(timer: func.TimerRequest) -> None:
    if timer.past_due:
        logging.info("retrain timer is past due; running now")
    run = get_wiring().retraining.run(trigger="timer")
    logging.info("retrain: %s, %s", run.status, run.reason)
