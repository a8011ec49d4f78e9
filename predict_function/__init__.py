"""POST /api/predict: validate, score, enqueue, answer with the decision."""
import time

import azure.functions as func

from shared.http import prediction_response, respond
from shared.schema import parse_json_body, validate_transaction
from shared.wiring import get_wiring


def main(req: func.HttpRequest) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        started = time.perf_counter()
        wiring = get_wiring()
        body = parse_json_body(req.get_body(), req.headers.get("content-type"))
        transaction = validate_transaction(body, max_age=wiring.settings.predict_max_age)
        prediction = wiring.scoring.score(transaction)
        wiring.telemetry.scored(prediction, time.perf_counter() - started)
        return prediction_response(prediction)

    return respond(handle)
