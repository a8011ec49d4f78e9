"""Shaping HTTP responses for the HTTP-triggered functions."""
from __future__ import annotations

import json
from typing import Any

import azure.functions as func

from .schema import ValidationError


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json",
                             charset="utf-8", headers=headers)


def validation_response(error: ValidationError) -> func.HttpResponse:
    return json_response(error.to_body(), error.status)


def unavailable_response(message: str, retry_after_seconds: int = 5) -> func.HttpResponse:
    """503: a temporary condition; the client should retry with the same transaction_id."""
    return json_response({"error": "service unavailable", "message": message}, 503,
                         headers={"Retry-After": str(retry_after_seconds)})
