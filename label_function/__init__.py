"""POST /api/labels: record true outcomes (chargebacks, investigations) for transactions."""
import azure.functions as func

from shared.app import get_services
from shared.http import json_response, validation_response
from shared.schema import MAX_LABEL_REQUEST_BYTES, ValidationError, parse_json_body, validate_labels
from shared.services import record_labels


def main(req: func.HttpRequest) -> func.HttpResponse:
    try:
        body = parse_json_body(req.get_body(), req.headers.get("content-type"), max_bytes=MAX_LABEL_REQUEST_BYTES)
        labels = validate_labels(body)
    except ValidationError as exc:
        return validation_response(exc)
    result = record_labels(get_services(), labels)
    return json_response({"received": result.received, "stored": result.stored})
