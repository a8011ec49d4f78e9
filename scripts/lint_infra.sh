#!/usr/bin/env bash
# Lint the infrastructure code: checkov over the Bicep in infra/, hadolint over the Dockerfile.
# Exits non-zero when either reports a failure. The linters live in their own virtualenv
# (.venv-lint, git-ignored), rebuilt only when requirements-lint.txt changes.
#
# checkov's Bicep runner ignores inline `// checkov:skip=ID: reason` comments for its *graph*
# checks (checkov 3.3.30, checkov/bicep/runner.py add_graph_check_results); it honours them
# for every other check. This script applies the same comments to graph-check failures, so
# every suppression is written the one documented way, inside the resource it concerns.
#
# Usage: scripts/lint_infra.sh [--setup-only]
#   INFRA_DIR / DOCKERFILE (default infra / Dockerfile) lint something else (the tests use it
#   to show that a bad template or Dockerfile fails).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
INFRA_DIR=${INFRA_DIR:-infra}
DOCKERFILE=${DOCKERFILE:-Dockerfile}
VENV=.venv-lint
REQUIREMENTS=requirements-lint.txt

if [ ! -x "$VENV/bin/python" ]; then
  echo "lint_infra: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha"
wanted=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "lint_infra: installing $REQUIREMENTS into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS"
  echo "$wanted" > "$stamp"
fi
if [ "${1:-}" = "--setup-only" ]; then
  "$VENV/bin/checkov" --version >/dev/null && "$VENV/bin/hadolint" --version >/dev/null
  exit 0
fi

status=0
report=$(mktemp -d)
trap 'rm -rf "$report"' EXIT

echo "== checkov ($INFRA_DIR, bicep)"
# --skip-download: no Prisma Cloud look-ups (guidelines, severities); the scan is local.
"$VENV/bin/checkov" -d "$INFRA_DIR" --framework bicep --quiet --compact --skip-download \
  -o cli -o json --output-file-path "console,$report/checkov.json" || true
"$VENV/bin/python" - "$report/checkov.json" "$INFRA_DIR" <<'PY' || status=1
import json, re, sys
from pathlib import Path

SKIP = re.compile(r"checkov:skip=([A-Za-z_\d-]+)(?::\s*(\S.*))?")
data = json.loads(Path(sys.argv[1]).read_text())
reports = data if isinstance(data, list) else [data]
passed = failed = skipped = applied = 0
problems = []
for report in reports:
    # --quiet leaves passed and skipped checks out of the lists, not out of the summary.
    summary = report.get("summary", {})
    passed += summary.get("passed", 0)
    skipped += summary.get("skipped", 0)
    if summary.get("parsing_errors"):
        problems.append(f"checkov could not parse {summary['parsing_errors']} file(s): they were not scanned")
        failed += 1
    for check in report.get("results", {}).get("failed_checks", []):
        lines = Path(check["file_abs_path"]).read_text().splitlines()
        start, end = check["file_line_range"]
        reasons = {m.group(1): (m.group(2) or "").strip()
                   for line in lines[start - 1:end] for m in [SKIP.search(line)] if m}
        where = f"{check['check_id']} {check['resource']} ({check['file_path']}:{start}-{end})"
        if reasons.get(check["check_id"]):
            applied += 1
            skipped += 1
            print(f"lint_infra: inline skip applied to graph check {where}")
        else:
            failed += 1
            problems.append(f"FAILED {where}: {check['check_name']}")
# Every suppression must say why.
for path in Path(sys.argv[2]).rglob("*.bicep"):
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = SKIP.search(line)
        if match and not match.group(2):
            problems.append(f"{path}:{number}: checkov:skip={match.group(1)} has no reason")
            failed += 1
for problem in problems:
    print(problem)
print(f"lint_infra: checkov Passed checks: {passed}, Failed checks: {failed}, Skipped checks: {skipped}"
      f" ({applied} graph-check skips applied)")
if passed == 0:
    print("lint_infra: checkov passed no check at all: nothing was parsed")
    sys.exit(1)
sys.exit(1 if failed else 0)
PY

echo "== hadolint ($DOCKERFILE)"
if "$VENV/bin/hadolint" "$DOCKERFILE"; then
  echo "lint_infra: hadolint passed"
else
  status=1
fi

exit $status
