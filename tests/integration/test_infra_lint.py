"""scripts/lint_infra.sh: checkov over the Bicep and hadolint over the Dockerfile pass, and
they really lint (a bad template and a bad Dockerfile fail).

The linters live in .venv-lint, which the script builds from requirements-lint.txt (PyPI).
Locally the tests skip when that virtualenv cannot be built; with CI=true they fail instead.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from harness.servers import in_ci

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "lint_infra.sh"


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **env})


@pytest.fixture(scope="module")
def linters():
    """The lint virtualenv, built (or reused) once for this module."""
    result = run("--setup-only")
    if result.returncode != 0:
        message = f"lint virtualenv unavailable:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        if in_ci():
            pytest.fail(message + "\n(CI=true: this test must run, not skip)")
        pytest.skip(message)


def summary(output: str) -> dict[str, int]:
    match = re.search(r"lint_infra: checkov Passed checks: (\d+), Failed checks: (\d+), Skipped checks: (\d+)", output)
    assert match, output[-3000:]
    return dict(zip(("passed", "failed", "skipped"), map(int, match.groups())))


def test_infra_and_dockerfile_pass_the_linters(linters):
    result = run()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    counts = summary(output)
    # checkov really parsed the templates: dozens of checks ran on them.
    assert counts["passed"] >= 20 and counts["failed"] == 0, counts
    # Each suppression is one skipped check: none is unused, none is missing.
    suppressions = sum(len(re.findall(r"checkov:skip=", path.read_text()))
                       for path in (ROOT / "infra").rglob("*.bicep"))
    assert counts["skipped"] == suppressions, (counts, suppressions)
    assert "lint_infra: hadolint passed" in output


def test_a_bad_template_and_dockerfile_fail(linters, tmp_path):
    infra = tmp_path / "infra"
    infra.mkdir()
    (infra / "main.bicep").write_text("""\
resource st 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stlintexample001'
  location: 'westeurope'
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    // checkov:skip=CKV_AZURE_35
    supportsHttpsTrafficOnly: false
    minimumTlsVersion: 'TLS1_0'
  }
}
""")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM debian:12\nRUN apt-get update && apt-get install -y curl\n")
    result = run(INFRA_DIR=str(infra), DOCKERFILE=str(dockerfile))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "FAILED CKV_AZURE_3 " in output and "FAILED CKV_AZURE_44 " in output
    assert "checkov:skip=CKV_AZURE_35 has no reason" in output
    assert summary(output)["failed"] >= 3
    assert "DL3008" in output and "lint_infra: hadolint passed" not in output
