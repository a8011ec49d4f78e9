"""HTTP for the HTTP-triggered functions: the one mapping from service errors to answers,
and the shape of each answer."""
from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from typing import Any

import azure.functions as func

from .errors import Conflict, ServiceError, Unavailable
from .schema import ValidationError, format_timestamp
from .usecases.scoring import Prediction

log = logging.getLogger(__name__)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json",
                             charset="utf-8", headers=headers)


def error_response(error: ServiceError) -> func.HttpResponse:
    """The answer for a service error: 4xx naming the fields, or 503 with Retry-After."""
    if isinstance(error, ValidationError):
        return json_response(error.to_body(), error.status)
    if isinstance(error, Conflict):
        return json_response({"error": "conflict", "message": str(error), "fields": error.fields}, 409)
    if isinstance(error, Unavailable):
        # A temporary condition: the client should retry with the same transaction_id.
        return json_response({"error": "service unavailable", "message": str(error)}, 503,
                             headers={"Retry-After": str(error.retry_after_seconds)})
    return json_response({"error": "internal error", "message": str(error)}, 500)


def respond(handle: Callable[[], func.HttpResponse]) -> func.HttpResponse:
    """Run a request handler; service errors become their documented answers. Anything else
    is a bug: it propagates, and the host answers 500 and logs the traceback."""
    try:
        return handle()
    except ServiceError as error:
        if isinstance(error, Unavailable):
            log.warning("answered 503: %s", error)
        return error_response(error)


def prediction_body(prediction: Prediction) -> dict[str, Any]:
    scored = prediction.scored
    body: dict[str, Any] = {
        "transaction_id": scored.transaction.transaction_id,
        "decision": scored.decision or ("decline" if scored.is_fraud else "approve"),
        "fraud_probability": round(scored.fraud_probability, 6),
        "is_fraud": scored.is_fraud,
        # The decline threshold (null: nothing is declined on score alone).
        "threshold": round(prediction.threshold, 6) if math.isfinite(prediction.threshold) else None,
        "review_threshold": round(scored.review_threshold, 6) if scored.review_threshold is not None else None,
        "model_version": scored.model_version,
        "scored_at": format_timestamp(scored.scored_at),
    }
    if scored.rule:
        body["rule"] = scored.rule
    if scored.reasons:
        body["reasons"] = scored.reasons
    if scored.degraded:
        body["degraded"] = True
    return body


def prediction_response(prediction: Prediction) -> func.HttpResponse:
    """The prediction; a replay is marked in a header, as payment APIs do, with the same body."""
    headers = {"Idempotent-Replayed": "true"} if prediction.replayed else None
    return json_response(prediction_body(prediction), headers=headers)


def key_fingerprint(req: func.HttpRequest) -> str:
    """Which function key made the request, without storing the key: the first 12 hex digits
    of its SHA-256 ("none" without a key, e.g. locally). Labels record it, so an operator can
    revoke everything one key sent."""
    key = req.headers.get("x-functions-key") or req.params.get("code")
    if not key:
        return "none"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
