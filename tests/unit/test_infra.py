"""The infrastructure code stays in step with the app: every setting the code reads is set by
the Bicep template, the container image builds the Python version and requirements the project
targets, and every checkov suppression is documented. (tests/integration/test_infra_lint.py
runs the linters themselves.)"""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest

from shared.config import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
APP_SETTINGS_BICEP = INFRA / "app" / "appsettings.bicep"
FUNCTION_BICEP = INFRA / "app" / "function.bicep"
HOOK = INFRA / "hooks" / "postprovision.sh"

# Settings the code reads that the template leaves unset on purpose. Keep it short; each needs
# a reason, and the test fails when an entry goes stale (set by the template, or no longer read).
ALLOWED_UNSET = {
    # A storage connection string. Azure uses identity-based AzureWebJobsStorage__* instead
    # (shared keys are disabled on the account); the code falls back to it only when unset.
    "AzureWebJobsStorage": "superseded by AzureWebJobsStorage__accountName/__blobServiceUri/__queueServiceUri",
    # The local SQLite/PostgreSQL URL; SQL_CONNECTION_STRING wins over it (shared/storage/db.py).
    "DATABASE_URL": "superseded by SQL_CONNECTION_STRING",
}

# Settings Flex Consumption rejects or ignores: their job is done by functionAppConfig.
FLEX_UNSUPPORTED = {
    "FUNCTIONS_EXTENSION_VERSION", "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE",
    "SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD", "WEBSITE_NODE_DEFAULT_VERSION",
    "FUNCTIONS_WORKER_PROCESS_COUNT", "PYTHON_THREADPOOL_THREAD_COUNT", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
}


class RecordingEnv(dict):
    """A settings mapping that records every name the code asks for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.asked.add(key)
        return super().__contains__(key)

    def _by_iteration(self, *args, **kwargs):
        raise AssertionError("Settings.from_env iterates over the environment: settings read that way cannot "
                             "be checked against the template; read each setting by name")

    __iter__ = keys = items = values = _by_iteration


def settings_read_by_code() -> set[str]:
    """Names Settings.from_env reads: with nothing set, and with the local example set (so both
    sides of every `a or b` fallback are taken)."""
    asked: set[str] = set()
    example = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    for values in ({}, example):
        env = RecordingEnv(values)
        Settings.from_env(env)
        asked |= env.asked
    return asked


def _block(text: str, opening: str) -> str:
    """The text between `opening` (which ends with `{`) and its matching brace, strings skipped."""
    start = text.index(opening) + len(opening)
    depth, i = 1, start
    while depth:
        char = text[i]
        if char == "'":
            i = text.index("'", i + 1)
            while text[i - 1] == "\\":
                i = text.index("'", i + 1)
        elif char == "/" and text[i + 1] == "/":
            i = text.index("\n", i)
            continue
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        i += 1
    return text[start:i - 1]


def template_settings() -> dict[str, str]:
    """The app settings object of infra/app/appsettings.bicep: top-level name -> Bicep expression."""
    body = _block(APP_SETTINGS_BICEP.read_text(), "var appSettings = {")
    settings = {}
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith("//"):
            continue
        match = re.match(r"'?([A-Za-z_][A-Za-z0-9_]*)'?\s*:\s*(.+)$", line)
        assert match, f"unexpected line in the settings object: {line!r} (one `name: value` a line)"
        settings[match.group(1)] = match.group(2).strip()
    return settings


def deployed_values() -> dict[str, str]:
    """The settings with Bicep string values evaluated, parameters replaced by sample values."""
    samples = {
        "identityClientId": "00000000-0000-0000-0000-000000000001",
        "storageAccountName": "stexample", "blobEndpoint": "https://stexample.blob.core.windows.net/",
        "queueEndpoint": "https://stexample.queue.core.windows.net/", "transactionsQueue": "transactions",
        "modelContainer": "models", "sqlServerFqdn": "sql-example.database.windows.net", "databaseName": "fraud",
        "signingKeySecretUri": "https://kv-example.vault.azure.net/secrets/model-signing-key",
        "applicationInsightsConnectionString": "InstrumentationKey=00000000-0000-0000-0000-000000000002",
        "retrainSchedule": "0 0 */6 * * *",
    }
    values = {}
    for name, expression in template_settings().items():
        if expression in samples:
            values[name] = samples[expression]
            continue
        literal = re.fullmatch(r"'((?:[^'\\]|\\.)*)'", expression)
        assert literal, f"{name}: expected a parameter or a string, got {expression}"
        values[name] = re.sub(r"\$\{(\w+)\}", lambda m: samples[m.group(1)], literal.group(1))
    return values


def test_the_settings_object_is_read():
    settings = template_settings()
    assert {"SQL_CONNECTION_STRING", "MODEL_SIGNING_KEY", "AzureWebJobsStorage__accountName"} <= set(settings)


def test_the_recorder_sees_what_the_code_reads():
    read = settings_read_by_code()
    assert {"RETRAIN_THRESHOLD", "SQL_CONNECTION_STRING", "AzureWebJobsStorage__accountName"} <= read


def test_every_setting_the_code_reads_is_set_by_the_template():
    missing = settings_read_by_code() - set(template_settings()) - set(ALLOWED_UNSET)
    assert not missing, (f"shared/config.py reads {sorted(missing)} but infra/app/appsettings.bicep does not set "
                         "them: add them to the settings object (or, with a reason, to ALLOWED_UNSET)")


def test_the_allow_list_is_not_stale():
    read, settings = settings_read_by_code(), set(template_settings())
    for name in ALLOWED_UNSET:
        assert name in read, f"{name} is allow-listed but the code no longer reads it"
        assert name not in settings, f"{name} is allow-listed but the template sets it"


def test_settings_referenced_by_function_bindings_are_set():
    settings = set(template_settings())
    for function_json in ROOT.glob("*/function.json"):
        text = function_json.read_text()
        for name in re.findall(r"%([A-Za-z0-9_]+)%", text):
            assert name in settings, f"{function_json.parent.name} binds %{name}% which the template does not set"
        for connection in re.findall(r'"connection"\s*:\s*"([^"]+)"', text):
            # Identity-based connection: <name>__queueServiceUri (and friends), never a key.
            assert f"{connection}__queueServiceUri" in settings or connection in settings, function_json


def test_no_setting_that_flex_consumption_rejects():
    assert not FLEX_UNSUPPORTED & set(template_settings())


def test_the_deployed_settings_configure_the_app_without_secrets():
    values = deployed_values()
    settings = Settings.from_env(values)
    # Storage by identity: no connection string, and no local-development fallback.
    assert settings.storage_connection == ""
    assert settings.blob_service_uri.startswith("https://") and settings.queue_service_uri.startswith("https://")
    assert values["AzureWebJobsStorage__credential"] == "managedidentity"
    assert values["AzureWebJobsStorage__clientId"] == values["AZURE_CLIENT_ID"]
    # SQL Server by managed identity; no password anywhere.
    connection = settings.sql_connection_string
    assert "Driver={ODBC Driver 18 for SQL Server}" in connection
    assert "Authentication=ActiveDirectoryMsi" in connection and "Encrypt=yes" in connection
    assert f"Uid={values['AZURE_CLIENT_ID']}" in connection
    assert not re.search(r"(?i)\b(pwd|password)\s*=", connection)
    # The signing key is a Key Vault reference, resolved by App Service.
    assert re.fullmatch(r"@Microsoft\.KeyVault\(SecretUri=https://[^)]+\)", values["MODEL_SIGNING_KEY"])
    # Every numeric default parses the way the code expects.
    assert settings.retrain_threshold == 1000 and settings.history_timeout_ms == 250
    assert values["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"].endswith("Authorization=AAD")


def test_the_template_values_match_the_code_defaults():
    """The template sets the tuning settings explicitly; they should say what the code's
    defaults say, so Azure behaves like the documented defaults."""
    values, defaults = deployed_values(), Settings()
    deployment_specific = {name for name in values if name.startswith(("AzureWebJobsStorage", "APPLICATIONINSIGHTS",
                                                                       "AZURE_CLIENT_ID"))}
    deployment_specific |= {"TRANSACTIONS_QUEUE", "MODEL_CONTAINER", "SQL_CONNECTION_STRING", "MODEL_SIGNING_KEY",
                            "RETRAIN_SCHEDULE"}
    tuning = set(values) - deployment_specific
    assert {"RETRAIN_THRESHOLD", "TRAINING_MAX_ROWS", "PROMOTION_TOLERANCE", "REVIEW_COST"} <= tuning
    for name in sorted(tuning):
        # The template's value, read by the code alone, must give exactly the default settings.
        assert Settings.from_env({name: values[name]}) == defaults, f"{name}={values[name]!r} is not the default"
    main = (INFRA / "main.bicep").read_text()
    assert f"param retrainSchedule string = '{defaults.retrain_schedule}'" in main
    # The queues and container the template creates are the ones the code uses.
    queue = re.search(r"var transactionsQueue = '([^']+)'", main).group(1)
    assert queue == defaults.transactions_queue
    assert "'${transactionsQueue}-poison'" in main
    assert Settings(transactions_queue=queue).poison_queue == f"{queue}-poison"
    assert re.search(r"var modelContainer = '([^']+)'", main).group(1) == defaults.model_container


# --- the container image ---------------------------------------------------------------------

def _python_versions() -> dict[str, str]:
    dockerfile = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"(?m)^FROM\s+(\S+)", dockerfile)
    assert froms == [froms[0]] and froms[0].startswith("mcr.microsoft.com/azure-functions/python:4-python"), froms
    return {
        "Dockerfile FROM": re.search(r"python:4-python(\d+\.\d+)", froms[0]).group(1),
        "function.bicep runtime": re.search(r"var pythonVersion = '(\d+\.\d+)'", FUNCTION_BICEP.read_text()).group(1),
        "README": re.search(r"Python (3\.\d+)", (ROOT / "README.md").read_text()).group(1),
    }


def test_image_app_and_docs_target_the_same_python():
    versions = _python_versions()
    assert len(set(versions.values())) == 1, versions
    assert re.search(r"runtime: \{\s+name: 'python'\s+version: pythonVersion\s+\}", FUNCTION_BICEP.read_text())


def test_the_image_installs_exactly_requirements_txt():
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = re.sub(r"\\\n\s*", " ", dockerfile)
    copy = re.search(r"(?m)^COPY\s+requirements\.txt\s+(\S+)$", instructions)
    assert copy, "the Dockerfile copies requirements.txt on its own, before the app"
    target = copy.group(1)
    pip_runs = re.findall(r"pip3? install[^&\n]*", instructions)
    assert pip_runs == [f"pip install --no-cache-dir -r {target} "] or \
        [run.strip() for run in pip_runs] == [f"pip install --no-cache-dir -r {target}"], pip_runs
    assert instructions.index("COPY requirements.txt") < instructions.index("COPY . /home/site/wwwroot")
    assert "AzureWebJobsScriptRoot=/home/site/wwwroot" in dockerfile
    assert "AzureFunctionsJobHost__Logging__Console__IsEnabled=true" in dockerfile
    assert re.search(r"ACCEPT_EULA=Y apt-get install .*\"msodbcsql18=\$\{MSODBCSQL18_VERSION\}\"", instructions)


def test_dockerignore_leaves_out_what_funcignore_leaves_out():
    def entries(path):
        return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]

    docker = set(entries(ROOT / ".dockerignore"))
    for entry in entries(ROOT / ".funcignore"):
        assert entry in docker or f"**/{entry}" in docker, f".dockerignore lacks {entry} (from .funcignore)"
    # The app itself must reach the image.
    for needed in ("requirements.txt", "host.json", "shared", "openapi.json", "predict_function"):
        assert needed not in docker and f"**/{needed}" not in docker


# --- azd wiring --------------------------------------------------------------------------------

def test_azure_yaml_service_matches_the_tagged_function_app():
    azure_yaml = (ROOT / "azure.yaml").read_text()
    service = re.search(r"(?m)^services:\n(?:\s*#.*\n)*  (\w+):\n((?:    .*\n)+)", azure_yaml)
    assert service, "azure.yaml declares one service"
    assert "host: function" in service.group(2) and "language: python" in service.group(2)
    main = (INFRA / "main.bicep").read_text()
    assert f"var serviceName = '{service.group(1)}'" in main
    assert "serviceTags: { 'azd-service-name': serviceName }" in main
    assert "bash infra/hooks/postprovision.sh" in azure_yaml
    for output in ("AZURE_FUNCTION_APP_NAME", "AZURE_SQL_SERVER_FQDN", "AZURE_SQL_SERVER_NAME",
                   "AZURE_SQL_DATABASE_NAME", "AZURE_FUNCTION_IDENTITY_NAME", "AZURE_RESOURCE_GROUP"):
        assert re.search(rf"(?m)^output {output} string", main), output
        assert output in HOOK.read_text() or output == "AZURE_FUNCTION_APP_NAME"


def test_parameters_file_names_real_parameters():
    main = (INFRA / "main.bicep").read_text()
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = set(re.findall(r"(?m)^param (\w+) ", main))
    assert set(parameters) <= declared
    # Required parameters without a default must come from azd (or its generate metadata).
    required = set(re.findall(r"(?m)^param (\w+) \w+$", main))
    assert required - set(parameters) == {"modelSigningKey"}
    assert "type: 'generate'" in main


def test_every_checkov_suppression_has_a_reason_and_is_documented():
    doc = (ROOT / "docs" / "deployment.md").read_text()
    found = 0
    for path in INFRA.rglob("*.bicep"):
        for line in path.read_text().splitlines():
            match = re.search(r"checkov:skip=([A-Z0-9_]+)(?::\s*(.*))?", line)
            if not match:
                continue
            found += 1
            check, reason = match.groups()
            assert reason and len(reason) > 20, f"{path.name}: {check} needs a reason"
            rows = [row for row in doc.splitlines() if row.startswith("|") and f"`{check}`" in row
                    and path.relative_to(ROOT).as_posix() in row]
            assert rows, f"docs/deployment.md does not list {check} in {path.relative_to(ROOT)}"
    assert found > 0


# --- the postprovision hook ----------------------------------------------------------------------

def _stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _run_hook(tmp_path: Path, sqlcmd_body: str, identity: str = "id-func-abc123", with_az: bool = True):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    _stub(bin_dir, "sqlcmd", f"""
        if [ "$1" = "--help" ]; then echo "  --authentication-method string"; exit 0; fi
        echo "sqlcmd $*" >> {log}
        for arg in "$@"; do case "$prev" in -i) cp "$arg" {tmp_path}/script.sql;; esac; prev=$arg; done
        {sqlcmd_body}
    """)
    if with_az:
        _stub(bin_dir, "az", f'echo "az $*" >> {log}\n')
    _stub(bin_dir, "sleep", "exit 0\n")
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path),
        "AZURE_SQL_SERVER_FQDN": "sql-x.database.windows.net", "AZURE_SQL_SERVER_NAME": "sql-x",
        "AZURE_SQL_DATABASE_NAME": "fraud", "AZURE_FUNCTION_IDENTITY_NAME": identity, "AZURE_RESOURCE_GROUP": "rg-x",
    }
    result = subprocess.run(["bash", str(HOOK)], env=env, capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def test_hook_creates_the_user_and_grants_the_three_roles(tmp_path):
    result, calls = _run_hook(tmp_path, "echo ok")
    assert result.returncode == 0, result.stderr
    assert len(calls) == 1 and "--authentication-method ActiveDirectoryDefault" in calls[0]
    assert "-v AppIdentity=id-func-abc123" in calls[0] and "-b" in calls[0].split()
    script = (tmp_path / "script.sql").read_text()
    assert "CREATE USER [$(AppIdentity)] FROM EXTERNAL PROVIDER" in script
    assert "IF NOT EXISTS (SELECT 1 FROM sys.database_principals WHERE name = N'$(AppIdentity)')" in script
    for role in ("db_datareader", "db_datawriter", "db_ddladmin"):
        assert f"ALTER ROLE {role} ADD MEMBER [$(AppIdentity)]" in script
        assert f"IS_ROLEMEMBER('{role}', N'$(AppIdentity)'), 0) = 0" in script
    assert "db_owner" not in script.replace("no db_owner", "")


def test_hook_lets_its_own_address_through_the_firewall_and_removes_it(tmp_path):
    refusal = ("echo \"Cannot open server 'sql-x' requested by the login. Client with IP address '203.0.113.7' "
               "is not allowed to access the server.\"")
    body = f"""
        count=$(grep -c '^sqlcmd' {tmp_path}/calls.log)
        if [ "$count" -lt 2 ]; then {refusal}; exit 1; fi
        echo granted
    """
    result, calls = _run_hook(tmp_path, body)
    assert result.returncode == 0, result.stdout + result.stderr
    rule_calls = [call for call in calls if call.startswith("az sql server firewall-rule")]
    assert len(rule_calls) == 2
    assert "create" in rule_calls[0] and "--start-ip-address 203.0.113.7 --end-ip-address 203.0.113.7" in rule_calls[0]
    assert "delete" in rule_calls[1] and "--name azd-postprovision-203-0-113-7" in rule_calls[1]


def test_hook_fails_clearly_without_access(tmp_path):
    result, calls = _run_hook(tmp_path, "echo \"Login failed for user '<token-identified principal>'.\"; exit 1")
    assert result.returncode != 0
    assert "Entra administrator" in result.stderr
    assert not [call for call in calls if call.startswith("az ")]


def test_hook_refuses_an_unexpected_identity_name(tmp_path):
    result, calls = _run_hook(tmp_path, "echo ok", identity="x]; DROP USER [y")
    assert result.returncode != 0 and calls == []


def test_hook_is_executable_bash():
    assert os.access(HOOK, os.X_OK)
    assert HOOK.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(HOOK)], check=True)


@pytest.mark.parametrize("script", ["scripts/lint_infra.sh", "infra/hooks/postprovision.sh"])
def test_scripts_are_strict(script):
    assert "set -euo pipefail" in (ROOT / script).read_text()
