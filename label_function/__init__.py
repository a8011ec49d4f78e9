"""POST /api/labels: record true outcomes (chargebacks, investigations) for transactions.

Its function keys are the label sources' authority, separate from predict's keys."""
import azure.functions as func

from shared.http import json_response, key_fingerprint, respond
from shared.schema import MAX_LABEL_REQUEST_BYTES, parse_json_body, validate_labels
from shared.wiring import get_wiring


def main(req: func.HttpRequest) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        body = parse_json_body(req.get_body(), req.headers.get("content-type"), max_bytes=MAX_LABEL_REQUEST_BYTES)
        result = get_wiring().labeling.record(validate_labels(body), key_id=key_fingerprint(req))
        return json_response({"received": result.received, "stored": result.stored})

    return respond(handle)
