"""Queue trigger: insert each scored transaction into the database, idempotently.

Errors propagate on purpose: the host retries the message and, after
maxDequeueCount attempts, moves it to the poison queue.
"""
import logging

import azure.functions as func

from shared.usecases.persisting import MalformedMessage
from shared.wiring import get_wiring


def main(msg: func.QueueMessage) -> None:
    try:
        get_wiring().persisting.persist(msg.get_body())
    except MalformedMessage as exc:
        logging.error("message %s (attempt %s) is malformed: %s", msg.id, msg.dequeue_count, exc)
        raise
    except Exception as exc:
        logging.error("message %s (attempt %s) not persisted: %s", msg.id, msg.dequeue_count, type(exc).__name__)
        raise
