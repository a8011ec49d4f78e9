"""POST /api/predict: validate, score, enqueue, answer with the decision."""
import logging

import azure.functions as func

from shared.app import get_services
from shared.http import json_response, unavailable_response, validation_response
from shared.model import ModelUnavailable
from shared.schema import ValidationError, parse_json_body, validate_transaction
from shared.services import score_transaction
from shared.storage.queue import EnqueueFailed


def main(req: func.HttpRequest) -> func.HttpResponse:
    try:
        transaction = validate_transaction(parse_json_body(req.get_body(), req.headers.get("content-type")))
        prediction = score_transaction(get_services(), transaction)
    except ValidationError as exc:
        return validation_response(exc)
    except ModelUnavailable as exc:
        return unavailable_response(str(exc), retry_after_seconds=30)
    except EnqueueFailed as exc:
        logging.error("transaction not enqueued: %s", exc)
        return unavailable_response("the transaction could not be queued; retry with the same transaction_id")
    return json_response(prediction.to_response())
