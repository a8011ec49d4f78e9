"""A fresh process: import the predict function, score one transaction, report."""
import json
import sys

import azure.functions as func

import predict_function

request = func.HttpRequest(method="POST", url="/api/predict", headers={"content-type": "application/json"},
                           params={}, route_params={}, body=sys.argv[1].encode())
response = predict_function.main(request)
print(json.dumps({"status": response.status_code}))
