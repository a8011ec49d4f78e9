"""Start Azurite (blob + queue) from the project's pinned npm package.

Used by ``make run`` (fixed ports, data kept in ``.azurite/``) and by the tests
(free ports, a temporary folder).
"""
from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Azurite's documented well-known development account (public, not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteUnavailable(RuntimeError):
    """Azurite could not be started (the message says why)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AzuriteUnavailable(f"azurite exited with code {process.returncode}")
        if port_in_use(port):
            return
        time.sleep(0.1)
    raise AzuriteUnavailable(f"port {port} did not open within {timeout}s")


def connection_string(blob_port: int, queue_port: int) -> str:
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{blob_port}/{ACCOUNT};"
        f"QueueEndpoint=http://127.0.0.1:{queue_port}/{ACCOUNT};"
    )


@dataclass
class Azurite:
    """A running Azurite blob + queue server."""

    blob_port: int
    queue_port: int
    workdir: Path
    table_port: int = 0
    process: subprocess.Popen | None = None

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.queue_port)

    def start(self) -> Azurite:
        binary = PROJECT_ROOT / "node_modules" / ".bin" / "azurite"
        if not binary.exists():
            raise AzuriteUnavailable(f"{binary} is missing: run `npm ci` in the project root")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "azurite.log", "ab")
        self.process = subprocess.Popen(
            [
                str(binary),
                "--silent",
                # The Python SDKs speak a newer storage API version than Azurite knows.
                "--skipApiVersionCheck",
                "--loose",
                "--location", str(self.workdir),
                "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
                "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
                "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port or free_port()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
        )
        wait_for_port(self.blob_port, process=self.process)
        wait_for_port(self.queue_port, process=self.process)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                # Azurite waits for idle keep-alive connections on SIGTERM; do not wait long.
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same ports and data (a storage outage)."""
        self.stop()
        self.start()
