"""GET/POST /api/console[/...]: the operator console (page, its JSON, promote / rollback / label).

Its function keys are the operators' authority, separate from predict's and labels': the page
calls only this function's routes, with the key it was opened with. See shared/console.
"""
import azure.functions as func

from shared.console import handle, secured
from shared.http import respond
from shared.wiring import get_wiring


def main(req: func.HttpRequest) -> func.HttpResponse:
    return secured(respond(lambda: handle(req, get_wiring())))
