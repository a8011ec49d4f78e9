"""POST /api/labels: record true outcomes (chargebacks, investigations) for transactions."""
import logging

import azure.functions as func
from sqlalchemy.exc import DBAPIError

from shared.app import get_services
from shared.http import json_response, unavailable_response, validation_response
from shared.schema import MAX_LABEL_REQUEST_BYTES, ValidationError, parse_json_body, validate_labels
from shared.services import record_labels


def main(req: func.HttpRequest) -> func.HttpResponse:
    try:
        body = parse_json_body(req.get_body(), req.headers.get("content-type"), max_bytes=MAX_LABEL_REQUEST_BYTES)
        labels = validate_labels(body)
    except ValidationError as exc:
        return validation_response(exc)
    try:
        result = record_labels(get_services(), labels)
    except DBAPIError as exc:
        logging.error("labels not stored: database error %s", type(exc.orig).__name__)
        return unavailable_response("the labels could not be stored; retry the same batch")
    return json_response({"received": result.received, "stored": result.stored})
