"""A throwaway function app for devhost's integration tests, built in ``tmp_path``.

Function folders get a random suffix: they are imported as ``__app__.<folder>``
in this process, like the Python worker does, so each app needs its own names.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.waiting import wait_for  # noqa: F401  (the devhost tests import it from here)

ECHO = '''
import json
import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    if req.params.get("explode"):
        raise RuntimeError("asked to fail")
    return func.HttpResponse(
        json.dumps({
            "method": req.method, "url": req.url, "params": dict(req.params),
            "route": dict(req.route_params), "body": req.get_body().decode("utf-8"),
            "content_type": req.headers.get("content-type"), "x_repeated": req.headers.get("x-repeated"),
        }),
        status_code=int(req.params.get("status", "200")),
        headers={"X-Echo": "yes"},
        mimetype="application/json",
    )
'''

OPEN = '''
def main(req):
    return "open to all"
'''

WORKER = '''
import os
from pathlib import Path

import azure.functions as func


def main(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode("utf-8")
    with open(Path(os.environ["DEVHOST_TEST_OUTPUT"]) / "queue.log", "a", encoding="utf-8") as log:
        log.write(f"{body}\\t{msg.dequeue_count}\\t{msg.id}\\n")
    if "poison" in body:
        raise ValueError("poison message")
'''

TICK = '''
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import azure.functions as func


def main(timer: func.TimerRequest) -> None:
    started = datetime.now(timezone.utc).timestamp()
    time.sleep(float(os.environ.get("DEVHOST_TEST_TIMER_SLEEP", "0")))
    with open(Path(os.environ["DEVHOST_TEST_OUTPUT"]) / "timer.log", "a", encoding="utf-8") as log:
        log.write(f"{started}\\t{datetime.now(timezone.utc).timestamp()}\\t{timer.past_due}\\n")
'''

HOST_JSON = {
    "version": "2.0",
    "extensions": {
        "http": {"routePrefix": "api"},
        "queues": {"maxDequeueCount": 2, "visibilityTimeout": "00:00:00", "maxPollingInterval": "00:00:00.500",
                   "batchSize": 8},
    },
}


@dataclass
class ThrowawayApp:
    root: Path
    output: Path
    token: str
    queue: str

    def lines(self, name: str) -> list[list[str]]:
        path = self.output / name
        if not path.exists():
            return []
        return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def _function(root: Path, folder: str, bindings: list[dict], code: str) -> None:
    (root / folder).mkdir()
    (root / folder / "function.json").write_text(json.dumps({"scriptFile": "__init__.py", "bindings": bindings}))
    (root / folder / "__init__.py").write_text(code)


def build_app(tmp_path: Path, *, http_only: bool = False) -> ThrowawayApp:
    token = uuid.uuid4().hex[:8]
    root, output = tmp_path / "app", tmp_path / "out"
    root.mkdir()
    output.mkdir()
    (root / "host.json").write_text(json.dumps(HOST_JSON))
    _function(root, f"echo_{token}", [
        {"authLevel": "function", "type": "httpTrigger", "direction": "in", "name": "req",
         "methods": ["get", "post"], "route": "echo/{item?}"},
        {"type": "http", "direction": "out", "name": "$return"},
    ], ECHO)
    if http_only:
        _function(root, f"open_{token}", [
            {"authLevel": "anonymous", "type": "httpTrigger", "direction": "in", "name": "req", "route": "open"},
            {"type": "http", "direction": "out", "name": "$return"},
        ], OPEN)
    else:
        _function(root, f"worker_{token}", [
            {"name": "msg", "type": "queueTrigger", "direction": "in", "queueName": "%DEVHOST_TEST_QUEUE%",
             "connection": "DevhostTestStorage"},
        ], WORKER)
        _function(root, f"tick_{token}", [
            {"name": "timer", "type": "timerTrigger", "direction": "in", "schedule": "%DEVHOST_TEST_SCHEDULE%",
             "runOnStartup": False, "useMonitor": False},
        ], TICK)
    return ThrowawayApp(root=root, output=output, token=token, queue=f"devhost-{token}")


@pytest.fixture
def http_app(tmp_path) -> ThrowawayApp:
    return build_app(tmp_path, http_only=True)


@pytest.fixture
def full_app(tmp_path) -> ThrowawayApp:
    return build_app(tmp_path)
