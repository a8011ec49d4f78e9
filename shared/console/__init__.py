"""The operator console, served by the function app itself (``console_function``).

Routes, all under the console function (``authLevel: function``: its own keys, apart from
predict's and labels'):

=======  ===============================================  =========================================
GET      /api/console[?window=hour|day]                   the page (server-rendered HTML)
GET      /api/console/static/console.js | console.css     its script and style sheet
GET      /api/console/monitoring[?window=hour|day]        the page's data as JSON (openapi.json)
GET      /api/console/models/{version}/report/{name}.png  a version's report plot
POST     /api/console/labels                              review-queue labels (source ``console``)
POST     /api/console/models/promote                      promote a verified version
POST     /api/console/models/rollback                     roll back along the promotion history
=======  ===============================================  =========================================

Every answer carries a Content-Security-Policy (no inline script or style; scripts, styles,
images and fetches from the app itself only), ``X-Content-Type-Options: nosniff``, no
caching (the page holds its key) and no referrer.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import azure.functions as func

from ..http import json_response, key_fingerprint
from ..schema import MAX_LABEL_REQUEST_BYTES, FieldError, ValidationError, parse_json_body, validate_labels

if TYPE_CHECKING:
    from ..wiring import Wiring

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"static/console.js": "text/javascript", "static/console.css": "text/css"}
REPORT = re.compile(r"^models/(?P<version>[A-Za-z0-9][A-Za-z0-9._-]{0,63})/report/(?P<name>[a-z0-9_]{1,64}\.png)$")
WINDOWS = ("hour", "day")
CONSOLE_LABEL_SOURCE = "console"
MAX_ACTION_BYTES = 4096

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def secured(response: func.HttpResponse) -> func.HttpResponse:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def request_key(req: func.HttpRequest) -> str:
    """The function key the request came with (header or ``code``), to carry on in the page."""
    return req.headers.get("x-functions-key") or req.params.get("code") or ""


def not_found(what: str) -> ValidationError:
    return ValidationError([FieldError("path", f"no console resource {what[:80]!r}")], status=404,
                           message="not found")


def _window(req: func.HttpRequest) -> str:
    window = req.params.get("window") or "hour"
    if window not in WINDOWS:
        raise ValidationError([FieldError("window", f"must be one of {', '.join(WINDOWS)}")])
    return window


def _base(req: func.HttpRequest, rest: str) -> str:
    """The console's own path (e.g. /api/console), from the URL the page was asked for."""
    from urllib.parse import urlsplit

    path = urlsplit(req.url).path.rstrip("/")
    if rest and path.lower().endswith("/" + rest.lower()):
        path = path[: -len(rest) - 1]
    return path or "/api/console"


def validate_console_labels(data: Any) -> Any:
    """A ``{"labels": [...]}`` body, recorded with source ``console`` (the console names no other)."""
    if isinstance(data, dict) and "source" in data:
        raise ValidationError([FieldError("source", "unknown field")])
    if not isinstance(data, dict):
        return validate_labels(data)  # its error for a body that is not an object
    return validate_labels({**data, "source": CONSOLE_LABEL_SOURCE})


def handle(req: func.HttpRequest, wiring: Wiring) -> func.HttpResponse:
    """One console request (service errors propagate to shared.http.respond)."""
    rest = (req.route_params.get("path") or "").strip("/")
    method = req.method.upper()
    if method == "GET":
        if rest == "":
            from .page import render

            window = _window(req)
            page = render(wiring.monitoring.snapshot(window), _base(req, rest), request_key(req))
            return func.HttpResponse(page, status_code=200, mimetype="text/html", charset="utf-8")
        if rest == "monitoring":
            return json_response(wiring.monitoring.snapshot(_window(req)))
        if rest in ASSETS:
            return func.HttpResponse((STATIC / Path(rest).name).read_bytes(), status_code=200,
                                     mimetype=ASSETS[rest], charset="utf-8")
        found = REPORT.fullmatch(rest)
        if found:
            return _report(wiring, found["version"], found["name"])
    elif method == "POST":
        key_id = key_fingerprint(req)
        if rest == "labels":
            body = parse_json_body(req.get_body(), req.headers.get("content-type"), max_bytes=MAX_LABEL_REQUEST_BYTES)
            result = wiring.labeling.record(validate_console_labels(body), key_id=key_id)
            return json_response({"received": result.received, "stored": result.stored})
        if rest in ("models/promote", "models/rollback"):
            from ..usecases.model_admin import validate_empty, validate_version

            body = parse_json_body(req.get_body(), req.headers.get("content-type"), max_bytes=MAX_ACTION_BYTES)
            if rest == "models/promote":
                change = wiring.model_admin.promote(validate_version(body), key_id)
            else:
                validate_empty(body)
                change = wiring.model_admin.rollback(key_id)
            return json_response({"version": change.version, "previous": change.previous})
    raise not_found(rest)


def _report(wiring: Wiring, version: str, name: str) -> func.HttpResponse:
    found = wiring.monitoring.model(version)
    if found is None or name not in found[1]:
        raise not_found(f"models/{version}/report/{name}")
    data = wiring.store.download_file(version, f"report/{name}")
    return func.HttpResponse(data, status_code=200, mimetype="image/png")
