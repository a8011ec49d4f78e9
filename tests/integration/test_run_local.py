"""``make run``'s orchestrator (``python -m devhost.run_local``) as a developer runs it.

It works on the folder it lives in (``local.settings.json``, ``.azurite/``, ``.local/``), so
each test runs a temporary copy of the project (without the developer's settings, data,
venv or tests; ``node_modules`` linked) and never touches the developer's own settings or
data. Azurite is moved to free ports with ``AZURITE_BLOB_PORT``/``AZURITE_QUEUE_PORT``/
``AZURITE_TABLE_PORT``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from devhost.azurite import free_port, port_in_use

ROOT = Path(__file__).resolve().parents[2]
# App settings a developer's shell might hold: they would win over the copy's local.settings.json.
APP_SETTING_NAMES = {
    *json.loads((ROOT / "local.settings.json.example").read_text())["Values"],
    "AzureWebJobsStorage__accountName", "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri", "MIN_TRAINING_ROWS", "FUNCTION_KEY",
    "AZURITE_BLOB_PORT", "AZURITE_QUEUE_PORT", "AZURITE_TABLE_PORT",
}


# Not copied: the developer's data and settings, tools, caches. Everything else is (function
# folders may read files at the app root, as openapi_function reads openapi.json).
NOT_COPIED = {".git", ".venv", "node_modules", ".azurite", ".local", "local.settings.json", ".pytest_cache",
              ".hypothesis", "tests", "bench-results", ".ci"}


def project_copy(tmp_path: Path, http_port: int) -> Path:
    """The project as run_local sees it, in ``tmp_path``, serving on ``http_port``."""
    root = tmp_path / "project"
    root.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.db", "*.sqlite", "*.sqlite3")
    for entry in ROOT.iterdir():
        if entry.name in NOT_COPIED:
            continue
        if entry.is_dir():
            shutil.copytree(entry, root / entry.name, ignore=skip)
        else:
            shutil.copyfile(entry, root / entry.name)
    (root / "node_modules").symlink_to(ROOT / "node_modules", target_is_directory=True)
    settings = json.loads((ROOT / "local.settings.json.example").read_text())
    settings["Host"]["LocalHttpPort"] = http_port
    (root / "local.settings.json").write_text(json.dumps(settings, indent=2))
    return root


def run_local_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in APP_SETTING_NAMES}
    func = shutil.which("func", path=env.get("PATH"))
    if func:
        # Core Tools would be preferred: keep the test on the dev host, the path CI takes
        # (node, which Azurite needs, stays reachable).
        func_dir = str(Path(func).parent)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        node = shutil.which("node", path=env.get("PATH"))
        if node and Path(node).parent == Path(func_dir):
            (bin_dir / "node").symlink_to(node)
        env["PATH"] = os.pathsep.join([str(bin_dir), *(p for p in env["PATH"].split(os.pathsep) if p != func_dir)])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def processes_of(root: Path) -> list[int]:
    """Processes whose command line names ``root`` or whose working directory is inside it."""
    found = []
    marker = str(root)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if marker in cmdline or cwd == marker or cwd.startswith(marker + os.sep):
            found.append(int(entry.name))
    return found


def occupied_port():
    """A listening socket on a free port (what another server would look like)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_run_refuses_a_busy_port_with_a_clear_message(tmp_path):
    with occupied_port() as busy:
        port = busy.getsockname()[1]
        root = project_copy(tmp_path, port)
        settings_before = (root / "local.settings.json").read_bytes()
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "devhost.run_local"], cwd=root,
                                env=run_local_env(tmp_path, AZURITE_BLOB_PORT=str(free_port()),
                                                  AZURITE_QUEUE_PORT=str(free_port())),
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert f"port {port} is already in use" in result.stderr
    assert "make run" in result.stderr  # says what is probably holding it
    assert "Traceback" not in result.stderr
    # It stopped before starting anything or writing any data.
    assert time.monotonic() - started < 30
    assert not (root / ".azurite").exists() and not (root / ".local").exists()
    assert (root / "local.settings.json").read_bytes() == settings_before
    assert processes_of(root) == []


@pytest.mark.slow
def test_run_serves_the_app_and_ctrl_c_stops_it_and_its_azurite(tmp_path):
    http_port, blob_port, queue_port, table_port = free_port(), free_port(), free_port(), free_port()
    if len({http_port, blob_port, queue_port, table_port}) < 4:
        pytest.fail("free_port returned the same port twice; rerun")
    root = project_copy(tmp_path, http_port)
    output = tmp_path / "run_local.out"
    env = run_local_env(tmp_path, AZURITE_BLOB_PORT=str(blob_port), AZURITE_QUEUE_PORT=str(queue_port),
                        AZURITE_TABLE_PORT=str(table_port))
    url = f"http://127.0.0.1:{http_port}"
    with open(output, "wb") as out:
        # Its own session: the SIGINT below reaches its whole process group, as Ctrl-C in a terminal does.
        process = subprocess.Popen([sys.executable, "-m", "devhost.run_local"], cwd=root, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Azurite, `shared.cli init` (simulated history, first model), then the server; then the
        # README's curl example. (The server listens before its functions are loaded: retry until
        # it answers, and report run_local's output if it gave up instead.)
        deadline = time.monotonic() + 150
        while True:
            assert process.poll() is None, f"run_local exited with {process.returncode}:\n{output.read_text()}"
            assert time.monotonic() < deadline, f"no answer within 150 s:\n{output.read_text()}"
            if port_in_use(http_port):
                try:
                    response = requests.post(
                        f"{url}/api/predict", headers={"Content-Type": "application/json"},
                        data='{"customer_id": "C000001", "terminal_id": "T000001", "amount": 57.30}', timeout=30)
                    break
                except requests.ConnectionError:
                    pass
            time.sleep(0.5)
        assert port_in_use(blob_port) and port_in_use(queue_port), output.read_text()
        assert response.status_code == 200, (response.status_code, response.text, output.read_text())
        body = response.json()
        assert set(body) >= {"transaction_id", "fraud_probability", "is_fraud", "threshold", "model_version",
                             "scored_at"}
        assert body["model_version"]
        # The data went where a developer's would: the copy's .azurite/ and .local/.
        assert (root / ".azurite").is_dir() and (root / ".local" / "fraud.db").is_file()

        # Ctrl-C.
        os.killpg(process.pid, signal.SIGINT)
        try:
            returncode = process.wait(timeout=45)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run_local did not stop within 45 s of Ctrl-C:\n{output.read_text()}")
        text = output.read_text()
        assert returncode == 0, text
        assert f"Azurite started (blob :{blob_port}, queue :{queue_port}" in text
        assert "Azurite stopped" in text
        assert "Traceback" not in text, text
        deadline = time.monotonic() + 10
        while processes_of(root) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_of(root) == [], [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in processes_of(root)]
        for port in (http_port, blob_port, queue_port):
            assert not port_in_use(port), f"port {port} still open after Ctrl-C"
    finally:
        # Whatever the outcome, leave nothing running: only processes this test started.
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for pid in processes_of(root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# --- stopped by a signal, as `timeout`, process managers and IDE stop buttons do ------------------------

def wait_until_serving(process: subprocess.Popen, http_port: int, output: Path, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"run_local exited with {process.returncode}:\n{output.read_text()}"
        assert time.monotonic() < deadline, f"no answer within {timeout:g} s:\n{output.read_text()}"
        if port_in_use(http_port):
            try:
                requests.get(f"http://127.0.0.1:{http_port}/api/openapi.json", timeout=10)
                return
            except requests.ConnectionError:
                pass
        time.sleep(0.5)


@pytest.mark.slow
def test_sigterm_and_sighup_stop_everything_as_ctrl_c_does(tmp_path):
    ports = {"http": free_port(), "blob": free_port(), "queue": free_port(), "table": free_port()}
    if len(set(ports.values())) < 4:
        pytest.fail("free_port returned the same port twice; rerun")
    root = project_copy(tmp_path, ports["http"])
    env = run_local_env(tmp_path, AZURITE_BLOB_PORT=str(ports["blob"]), AZURITE_QUEUE_PORT=str(ports["queue"]),
                        AZURITE_TABLE_PORT=str(ports["table"]))
    try:
        # The first run initialises (first model); the second reuses the data and serves at once.
        for signum in (signal.SIGTERM, signal.SIGHUP):
            output = tmp_path / f"run_local-{signum.name}.out"
            with open(output, "wb") as out:
                process = subprocess.Popen([sys.executable, "-m", "devhost.run_local"], cwd=root, env=env,
                                           stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                wait_until_serving(process, ports["http"], output)
                assert port_in_use(ports["blob"]) and port_in_use(ports["queue"]), output.read_text()
                # To run_local's process only (not its group): what `timeout` and process managers do.
                os.kill(process.pid, signum)
                sent = time.monotonic()
                try:
                    returncode = process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"run_local did not stop within 30 s of {signum.name}:\n{output.read_text()}")
                took = time.monotonic() - sent
                print(f"{signum.name}: run_local exited {returncode} after {took:.1f} s")
                text = output.read_text()
                assert returncode == 0 and "Azurite stopped" in text and "Traceback" not in text, text
                assert took < 20
                deadline = time.monotonic() + 10
                while processes_of(root) and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert processes_of(root) == [], [Path(f"/proc/{p}/cmdline").read_bytes() for p in processes_of(root)]
                for name, port in ports.items():
                    if name != "table":
                        assert not port_in_use(port), f"{name} port {port} still open after {signum.name}"
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
    finally:
        for pid in processes_of(root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
