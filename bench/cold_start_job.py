"""A fresh process: import the predict function, score one transaction, report."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import azure.functions as func  # noqa: E402

import predict_function  # noqa: E402

request = func.HttpRequest(method="POST", url="/api/predict", headers={"content-type": "application/json"},
                           params={}, route_params={}, body=sys.argv[1].encode())
response = predict_function.main(request)
print(json.dumps({"status": response.status_code}))
