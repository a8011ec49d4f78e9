#!/usr/bin/env bash
# Prepare a machine to run or test the service: system packages (Debian/Ubuntu),
# the Python virtualenv with pinned requirements, and Azurite from package-lock.json.
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv

need_apt=()
# pyodbc needs unixODBC's libodbc.so.2 (SQL Server path); tests need a PostgreSQL server.
ldconfig -p 2>/dev/null | grep -q 'libodbc.so.2' || need_apt+=(unixodbc)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# The console's browser tests drive Debian's chromium headless (Playwright never downloads one).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
"$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="missing"; fi
  if [ "$SUDO" = missing ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: please install: ${need_apt[*]}" >&2
  else
    echo "bootstrap: installing system packages: ${need_apt[*]}"
    $SUDO apt-get update -qq
    # Don't let the postgresql package start a system cluster: tests start their own.
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha"
# The project itself is installed too (editable: its packages import from this folder without
# sys.path edits); pyproject.toml is part of the stamp so a change there reinstalls it.
wanted=$( (cat requirements.txt requirements-dev.txt pyproject.toml; pwd) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "bootstrap: installing Python requirements"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
  echo "$wanted" > "$stamp"
fi

npm_stamp=node_modules/.package-lock.sha
wanted_npm=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -x node_modules/.bin/azurite ] || [ "$(cat "$npm_stamp" 2>/dev/null)" != "$wanted_npm" ]; then
  echo "bootstrap: installing Azurite (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$wanted_npm" > "$npm_stamp"
fi
