"""function.json discovery, %SETTING% resolution, loading like the Python worker, invocation."""
from __future__ import annotations

import json
import logging
import sys
import uuid

import azure.functions as func
import pytest

from devhost.config import DevHostError
from devhost.functions import APP_NAMESPACE, discover_functions, load_function

HTTP_BINDINGS = [
    {"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["get"]},
    {"type": "http", "direction": "out", "name": "$return"},
]


def unique(prefix: str) -> str:
    """Function folder names are module names in __app__: keep them unique across tests."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def add_function(root, name, bindings, code="def main(req):\n    return 'ok'\n", **extra):
    folder = root / name
    folder.mkdir()
    (folder / "function.json").write_text(json.dumps({"bindings": bindings, **extra}))
    (folder / extra.get("scriptFile", "__init__.py")).write_text(code)
    return folder


def test_discovers_function_folders_and_skips_the_rest(tmp_path):
    add_function(tmp_path, "b_http", HTTP_BINDINGS)
    add_function(tmp_path, "a_http", HTTP_BINDINGS)
    add_function(tmp_path, "off", HTTP_BINDINGS, disabled=True)
    add_function(tmp_path, "off_by_setting", HTTP_BINDINGS)
    (tmp_path / "shared").mkdir()  # no function.json: a plain package
    (tmp_path / "shared" / "__init__.py").write_text("")
    specs, problems = discover_functions(tmp_path, {"AzureWebJobs.off_by_setting.Disabled": "true"}, {})
    assert problems == []
    assert [s.name for s in specs] == ["a_http", "b_http"]
    assert specs[0].entry_point == "main" and specs[0].script_file == (tmp_path / "a_http" / "__init__.py")
    assert specs[0].trigger_type == "httptrigger"


def test_host_json_functions_list_limits_what_is_loaded(tmp_path):
    add_function(tmp_path, "one", HTTP_BINDINGS)
    add_function(tmp_path, "two", HTTP_BINDINGS)
    specs, _ = discover_functions(tmp_path, {}, {"functions": ["Two"]})
    assert [s.name for s in specs] == ["two"]


def test_setting_references_in_bindings_are_resolved(tmp_path):
    add_function(tmp_path, "worker", [{"type": "queueTrigger", "direction": "in", "name": "msg",
                                       "queueName": "%QUEUE%-in", "connection": "Storage"}],
                 code="def main(msg):\n    pass\n")
    add_function(tmp_path, "tick", [{"type": "timerTrigger", "direction": "in", "name": "timer",
                                     "schedule": "%SCHEDULE%"}], code="def main(timer):\n    pass\n")
    specs, problems = discover_functions(tmp_path, {"queue": "orders", "SCHEDULE": "0 */5 * * * *"}, {})
    assert problems == []
    by_name = {s.name: s for s in specs}
    assert by_name["worker"].trigger["queueName"] == "orders-in"
    assert by_name["worker"].trigger["connection"] == "Storage"  # a setting *name*, not a reference
    assert by_name["tick"].trigger["schedule"] == "0 */5 * * * *"


def test_unknown_setting_reference_is_a_clear_problem(tmp_path):
    add_function(tmp_path, "worker", [{"type": "queueTrigger", "direction": "in", "name": "msg",
                                       "queueName": "%NOPE%"}])
    specs, problems = discover_functions(tmp_path, {}, {})
    assert specs == []
    assert problems == ["worker: binding 'msg' property 'queueName' refers to %NOPE%, which is not set in the "
                        "environment or local.settings.json"]


def test_unsupported_or_malformed_functions_are_reported(tmp_path):
    add_function(tmp_path, "blobby", [{"type": "blobTrigger", "direction": "in", "name": "b", "path": "x/{n}"}])
    add_function(tmp_path, "notrigger", [{"type": "http", "direction": "out", "name": "$return"}])
    add_function(tmp_path, "output", HTTP_BINDINGS + [{"type": "queue", "direction": "out", "name": "q"}])
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "function.json").write_text("{")
    _, problems = discover_functions(tmp_path, {}, {})
    text = "\n".join(problems)
    assert "badjson: function.json is not valid JSON" in text
    assert "blobby: binding type 'blobTrigger' (direction in) is not supported by devhost" in text
    assert "notrigger: function.json must declare exactly one trigger binding, found 0" in text
    assert "output: binding type 'queue' (direction out) is not supported by devhost" in text


def test_loads_like_the_python_worker(tmp_path):
    name = unique("loader")
    add_function(tmp_path, name, HTTP_BINDINGS, code="from . import helper\n"
                                                      "from .. import common\n"
                                                      "import common as absolute\n"
                                                      "def main(req):\n    return helper.VALUE + common.VALUE\n")
    (tmp_path / name / "helper.py").write_text("VALUE = 'h'\n")
    (tmp_path / "common.py").write_text("VALUE = 'c'\n")
    specs, _ = discover_functions(tmp_path, {}, {})
    loaded = load_function(specs[0], tmp_path)
    assert loaded.entry.__module__ == f"{APP_NAMESPACE}.{name}"
    assert str(tmp_path.resolve()) in sys.path
    assert loaded.invoke(None).return_value == "hc"


def test_honours_script_file_and_entry_point(tmp_path):
    name = unique("entry")
    add_function(tmp_path, name, HTTP_BINDINGS, code="def run(req):\n    return 'custom'\n",
                 scriptFile="handler.py", entryPoint="run")
    specs, _ = discover_functions(tmp_path, {}, {})
    loaded = load_function(specs[0], tmp_path)
    assert loaded.entry.__module__ == f"{APP_NAMESPACE}.{name}.handler"
    assert loaded.invoke(None).return_value == "custom"


@pytest.mark.parametrize("code, message", [
    ("def main(request):\n    pass\n", "declared in Python but not in function.json: ['request']"),
    ("def main():\n    pass\n", "declared in function.json but not in Python: ['req']"),
    ("def handler(req):\n    pass\n", "has no function 'main'"),
    ("import no_such_module_here\n", "cannot import"),
])
def test_load_errors_name_the_problem(tmp_path, code, message):
    add_function(tmp_path, unique("broken"), HTTP_BINDINGS, code=code)
    specs, _ = discover_functions(tmp_path, {}, {})
    with pytest.raises(DevHostError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_function(specs[0], tmp_path)


def test_a_second_app_with_the_same_folder_name_is_refused(tmp_path):
    name = unique("twin")
    for app in ("app1", "app2"):
        (tmp_path / app).mkdir()
        add_function(tmp_path / app, name, HTTP_BINDINGS)
    load_function(discover_functions(tmp_path / "app1", {}, {})[0][0], tmp_path / "app1")
    with pytest.raises(DevHostError, match="already loaded"):
        load_function(discover_functions(tmp_path / "app2", {}, {})[0][0], tmp_path / "app2")


def test_invocation_outcomes_and_the_one_line_log(tmp_path, caplog):
    name = unique("invoke")
    add_function(tmp_path, name, [
        {"type": "httpTrigger", "direction": "in", "name": "req"},
        {"type": "http", "direction": "out", "name": "res"},
    ], code="import azure.functions as func\n"
            "def main(req, res: func.Out[func.HttpResponse], context):\n"
            "    if req == 'fail':\n        raise KeyError('nope')\n"
            "    res.set(func.HttpResponse(context.function_name + ':' + context.invocation_id))\n")
    loaded = load_function(discover_functions(tmp_path, {}, {})[0][0], tmp_path)
    with caplog.at_level(logging.INFO, logger="devhost"):
        ok = loaded.invoke("fine")
        failed = loaded.invoke("fail")
    assert ok.succeeded and ok.outputs["res"].get_body().decode() == f"{name}:{ok.invocation_id}"
    assert not failed.succeeded and isinstance(failed.error, KeyError)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith(f"Executed 'Functions.{name}' (Succeeded, Id={ok.invocation_id}, Duration=")
    assert lines[1].startswith(f"Executed 'Functions.{name}' (Failed, Id={failed.invocation_id}, Duration=")
    assert lines[1].endswith("KeyError: 'nope'")


def test_async_functions_are_awaited(tmp_path):
    add_function(tmp_path, unique("coro"), HTTP_BINDINGS,
                 code="import asyncio\nasync def main(req):\n    await asyncio.sleep(0)\n    return 'awaited'\n")
    loaded = load_function(discover_functions(tmp_path, {}, {})[0][0], tmp_path)
    assert loaded.invoke(func.HttpRequest("GET", "/", body=b"")).return_value == "awaited"
