"""Queue trigger: insert each scored transaction into the database, idempotently.

Errors propagate on purpose: the host retries the message and, after
maxDequeueCount attempts, moves it to the poison queue.
"""
import logging

import azure.functions as func

from shared.app import get_services
from shared.services import MalformedMessage, persist_message


def main(msg: func.QueueMessage) -> None:
    try:
        persist_message(get_services(), msg.get_body())
    except MalformedMessage as exc:
        logging.error("message %s (attempt %s) is malformed: %s", msg.id, msg.dequeue_count, exc)
        raise
    except Exception as exc:
        logging.error("message %s (attempt %s) not persisted: %s", msg.id, msg.dequeue_count, type(exc).__name__)
        raise
