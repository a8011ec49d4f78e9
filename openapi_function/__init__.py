"""GET /api/openapi.json: the OpenAPI 3.1 description of the HTTP API (anonymous).

The document is ``openapi.json`` at the app root, read once per process and served
as it is; tests/integration/test_fuzz.py checks it against shared/schema.py.
"""
from pathlib import Path

import azure.functions as func

SPEC_PATH = Path(__file__).resolve().parents[1] / "openapi.json"
_SPEC = SPEC_PATH.read_bytes()


def main(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(_SPEC, status_code=200, mimetype="application/json", charset="utf-8",
                             headers={"Cache-Control": "public, max-age=300"})
