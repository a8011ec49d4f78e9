"""The function app's configuration is what Core Tools and the Azure host accept,
and settings, example and README do not drift apart."""
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from shared.config import Settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "schemas"
FUNCTIONS = sorted(p.parent.name for p in ROOT.glob("*/function.json"))


def load(path: Path):
    return json.loads(path.read_text())


def validator(name: str) -> Draft7Validator:
    return Draft7Validator(load(SCHEMAS / f"{name}.schema.json"))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_json_is_valid(function):
    errors = [e.message for e in validator("function").iter_errors(load(ROOT / function / "function.json"))]
    assert errors == []
    assert (ROOT / function / "__init__.py").exists()


def test_the_expected_functions_exist():
    assert {"predict_function", "persist_function", "retrain_function", "label_function",
            "console_function"} <= set(FUNCTIONS)


def test_host_json_and_settings_example_are_valid():
    host = load(ROOT / "host.json")
    assert [e.message for e in validator("host").iter_errors(host)] == []
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
    # The queue trigger must decode what the predict function enqueues (base64 JSON).
    assert host["extensions"]["queues"].get("messageEncoding", "base64") == "base64"
    example = load(ROOT / "local.settings.json.example")
    assert [e.message for e in validator("local.settings").iter_errors(example)] == []
    assert example["Values"]["FUNCTIONS_WORKER_RUNTIME"] == "python"


def test_http_functions_require_a_function_key():
    for function in FUNCTIONS:
        for binding in load(ROOT / function / "function.json")["bindings"]:
            if binding["type"] == "httpTrigger" and binding.get("route") != "openapi.json":
                assert binding["authLevel"] == "function", function


def test_setting_references_exist_in_the_example():
    values = load(ROOT / "local.settings.json.example")["Values"]
    for function in FUNCTIONS:
        text = (ROOT / function / "function.json").read_text()
        for name in re.findall(r"%([A-Za-z0-9_]+)%", text):
            assert name in values, f"{function} uses %{name}% which local.settings.json.example lacks"


def test_default_schedule_is_six_field_ncrontab():
    from croniter import croniter

    example = load(ROOT / "local.settings.json.example")["Values"]
    for schedule in (Settings().retrain_schedule, example["RETRAIN_SCHEDULE"]):
        assert len(schedule.split()) == 6
        assert croniter.is_valid(schedule, second_at_beginning=True)


def test_every_setting_is_documented():
    readme = (ROOT / "README.md").read_text()
    example = load(ROOT / "local.settings.json.example")["Values"]
    source = (ROOT / "shared" / "config.py").read_text()
    read = set(re.findall(r'(?:env\.get\(|_int\(env, |_float\(env, )"([^"]+)"', source))
    assert "RETRAIN_THRESHOLD" in read and "AzureWebJobsStorage" in read
    for name in read:
        assert f"`{name}`" in readme or name.split("__")[0] + "__" in readme, f"{name} not in README"
        if "__" not in name:
            assert name in example, f"{name} not in local.settings.json.example"


def test_local_settings_is_git_ignored():
    assert "local.settings.json" in (ROOT / ".gitignore").read_text().splitlines()
    assert "local.settings.json" in (ROOT / ".funcignore").read_text().splitlines()


def test_the_http_and_queue_functions_never_import_training_libraries():
    """Predict's cold start loads the ONNX model only: no pandas, scikit-learn or matplotlib."""
    import subprocess
    import sys

    code = ("import sys, predict_function, label_function, persist_function, openapi_function; "
            "print(sorted({'pandas', 'sklearn', 'imblearn', 'matplotlib', 'scipy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_app_packages_import_with_the_app_root_last_on_sys_path_as_the_worker_puts_it():
    """The Python worker appends the app root to sys.path, after site-packages: an installed
    top-level module named like a package of the app (``shared``) would win. Imported here
    exactly so (no site processing, no editable install), the app's own packages load."""
    import subprocess
    import sys
    import sysconfig

    code = (
        "import sys\n"
        f"sys.path = [p for p in sys.path if p] + [{sysconfig.get_paths()['purelib']!r}, {str(ROOT)!r}]\n"
        "import shared, shared.wiring, predict_function, label_function, persist_function, retrain_function\n"
        "print(shared.__file__)\n"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd="/", capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(ROOT / "shared" / "__init__.py")
    site_packages = Path(sysconfig.get_paths()["purelib"])
    for name in ("shared", "harness", "devhost", "bench", "scripts"):
        assert not (site_packages / name).exists() and not (site_packages / f"{name}.py").exists(), name
