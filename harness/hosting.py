"""The function app served by the dev host as its own process, and tearing a run down."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import requests

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"


class HostProcess:
    """``python -m devhost`` serving the function app on 127.0.0.1 with ``values`` as its
    settings (they replace the same names in this process's environment).

    ``in_flight_visibility`` shortens how long a message the queue trigger fetched stays
    invisible (the host's 10 minutes): a message whose delete was cut off by a storage
    restart is then redelivered within the run instead of 10 minutes later.
    """

    def __init__(self, values: dict[str, str], port: int, log_path: Path, in_flight_visibility: int | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.values = values
        self.port = port
        self.log_path = log_path
        self.in_flight_visibility = in_flight_visibility
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 90.0) -> HostProcess:
        env = {k: v for k, v in os.environ.items() if k not in self.values}
        env.update(self.values)
        boot = "import sys; from devhost.__main__ import main; sys.exit(main(sys.argv[1:]))"
        if self.in_flight_visibility is not None:
            seconds = int(self.in_flight_visibility)
            boot = f"import devhost.queue_trigger as q; q.RECEIVE_VISIBILITY_SECONDS = {seconds}; " + boot
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-c", boot, "--app-root", str(ROOT), "--host", LOOPBACK, "--port", str(self.port),
             *self.extra_args],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"dev host exited with {self.process.returncode}; see {self.log_path}")
            try:
                if requests.get(f"{self.base_url}/api/openapi.json", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dev host did not answer within {timeout}s; see {self.log_path}")
            time.sleep(0.25)

    def rss_kib(self) -> int:
        """Resident set size of the serving process, from /proc (Linux)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("VmRSS not found")

    def stop(self) -> str:
        """Stop (SIGTERM, then SIGKILL after 30 s) and return what it printed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> HostProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def stop_all(host: HostProcess | None, postgres: Any, azurite: Any, workdir: Path, keep: bool) -> None:
    """Stop what a run started (whichever exist) and remove its folder unless kept."""
    if host is not None:
        host.stop()
    if postgres is not None:
        postgres.stop()
    if azurite is not None:
        azurite.stop()
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
