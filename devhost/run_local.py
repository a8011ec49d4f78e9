"""``make run``: the whole service on this machine, on embedded defaults.

Starts Azurite (data in ``.azurite/``), prepares tables, container, queues and a
first model when needed (``shared.cli init``), then serves the function app on
port 7071 through Azure Functions Core Tools (``func start``) when it is
installed, otherwise through the project's dev host. Ctrl-C stops everything it
started, and so do SIGTERM and SIGHUP (what `timeout`, process managers, IDE stop
buttons and a closed terminal send). Running it again reuses the data.

``AZURITE_BLOB_PORT`` / ``AZURITE_QUEUE_PORT`` / ``AZURITE_TABLE_PORT`` move Azurite
off its usual 10000/10001/10002 (a second copy, the tests); the app is then given
an explicit connection string for those ports instead of ``UseDevelopmentStorage=true``.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .azurite import Azurite, AzuriteUnavailable, connection_string, port_in_use
from .config import DevHostError, read_local_settings

ROOT = Path(__file__).resolve().parents[1]
AZURITE_PORTS = {"blob": 10000, "queue": 10001, "table": 10002}  # what UseDevelopmentStorage=true means

CURL_EXAMPLE = """curl -s -X POST {url}/api/predict \\
  -H 'Content-Type: application/json' \\
  -d '{{"customer_id": "C000001", "terminal_id": "T000001", "amount": 57.30}}'"""


def _settings_file() -> Path:
    """local.settings.json, created from the example on first run (Core Tools needs it)."""
    target = ROOT / "local.settings.json"
    if not target.exists():
        shutil.copyfile(ROOT / "local.settings.json.example", target)
        print("created local.settings.json from local.settings.json.example (git-ignored; edit freely)")
    return target


def _environment(values: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in values.items():
        env.setdefault(key, value)  # real environment wins, as with Core Tools
    return env


def _azurite_ports() -> dict[str, int]:
    return {name: int(os.environ.get(f"AZURITE_{name.upper()}_PORT") or port)
            for name, port in AZURITE_PORTS.items()}


def _start_azurite(env: dict[str, str], started: list[Azurite]) -> Azurite | None:
    if env.get("AzureWebJobsStorage", "") != "UseDevelopmentStorage=true":
        print("AzureWebJobsStorage points at a real account: not starting Azurite")
        return None
    ports = _azurite_ports()
    if ports != AZURITE_PORTS:
        # UseDevelopmentStorage=true means the usual ports: name the moved ones. os.environ too, for the
        # server, which reads local.settings.json itself (where the real environment wins).
        env["AzureWebJobsStorage"] = os.environ["AzureWebJobsStorage"] = connection_string(ports["blob"],
                                                                                            ports["queue"])
    busy = [name for name, port in ports.items() if name != "table" and port_in_use(port)]
    if busy:
        print(f"Azurite ports {ports['blob']}/{ports['queue']} are in use: "
              "using the storage emulator already running there")
        return None
    azurite = Azurite(blob_port=ports["blob"], queue_port=ports["queue"],
                      table_port=ports["table"], workdir=ROOT / ".azurite")
    started.append(azurite)
    azurite.start()
    print(f"Azurite started (blob :{azurite.blob_port}, queue :{azurite.queue_port}, data in .azurite/)")
    return azurite


def _server_command(port: int) -> list[str]:
    func = shutil.which("func")
    if func:
        return [func, "start", "--port", str(port), "--python"]
    return [sys.executable, "-m", "devhost", "--app-root", str(ROOT), "--port", str(port)]


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _stop_requested(signum: int, _frame) -> None:
    """SIGTERM/SIGHUP end the run the way Ctrl-C does: through the cleanup below."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _hold_signals() -> None:
    """While stopping what it started: a second Ctrl-C/SIGTERM/SIGHUP must not cut the cleanup
    short (that is what left Azurite running); every step of it is bounded in time."""
    for signum in (signal.SIGINT, *STOP_SIGNALS):
        signal.signal(signum, signal.SIG_IGN)


def main() -> int:
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop_requested)
    settings_path = _settings_file()
    try:
        local = read_local_settings(ROOT, settings_path)
    except DevHostError as exc:
        print(f"run: {exc}", file=sys.stderr)
        return 2
    port = int(local.host_section.get("LocalHttpPort", 7071))
    if port_in_use(port):
        print(f"run: port {port} is already in use — is another copy of `make run` (or func start) running?",
              file=sys.stderr)
        return 1
    env = _environment(dict(local.values))
    database_url = env.get("DATABASE_URL", "")
    if database_url.startswith("sqlite:///") and not database_url.startswith("sqlite:////"):
        (ROOT / database_url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)

    server = None
    started: list[Azurite] = []  # known before it starts: a stop signal meanwhile must stop it too
    try:
        try:
            _start_azurite(env, started)
        except AzuriteUnavailable as exc:
            print(f"run: Azurite did not start: {exc}", file=sys.stderr)
            return 2
        print("preparing tables, container, queues and the first model (shared.cli init) ...")
        init = subprocess.run([sys.executable, "-m", "shared.cli", "init"], cwd=ROOT, env=env)
        if init.returncode != 0:
            print("run: init failed (see above)", file=sys.stderr)
            return init.returncode
        command = _server_command(port)
        via = "Azure Functions Core Tools" if os.path.basename(command[0]) == "func" else "the project's dev host"
        url = f"http://localhost:{port}"
        print(f"\nserving the function app through {via} at {url}\n\ntry:\n{CURL_EXAMPLE.format(url=url)}\n\n"
              "Ctrl-C stops everything.\n")
        # The server reads local.settings.json itself, as Core Tools does.
        server = subprocess.Popen(command, cwd=ROOT)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _hold_signals()
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
        for azurite in started:
            running = azurite.process is not None and azurite.process.poll() is None
            azurite.stop()
            if running:
                print("Azurite stopped")


if __name__ == "__main__":
    sys.exit(main())
