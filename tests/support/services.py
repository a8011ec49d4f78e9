"""Start the real local services the tests need: Azurite and a PostgreSQL server.

Both run from this machine's own binaries in a temporary directory on free
ports. When a service cannot be started locally the caller skips with the
reason; in CI (``CI=true``) it must start, so the caller fails instead.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Azurite's documented well-known development account (public, not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class ServiceUnavailable(RuntimeError):
    """The service cannot be started on this machine (the reason is the message)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceUnavailable(f"process exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ServiceUnavailable(f"port {port} did not open within {timeout}s")


def azurite_connection_string(blob_port: int, queue_port: int) -> str:
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{blob_port}/{AZURITE_ACCOUNT};"
        f"QueueEndpoint=http://127.0.0.1:{queue_port}/{AZURITE_ACCOUNT};"
    )


@dataclass
class Azurite:
    """A running Azurite blob + queue server."""

    blob_port: int
    queue_port: int
    workdir: Path
    process: subprocess.Popen | None = None

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.blob_port, self.queue_port)

    def start(self) -> "Azurite":
        binary = PROJECT_ROOT / "node_modules" / ".bin" / "azurite"
        if not binary.exists():
            raise ServiceUnavailable(f"{binary} is missing: run `npm ci` in the project root")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "azurite.log", "ab")
        self.process = subprocess.Popen(
            [
                str(binary),
                "--silent",
                "--skipApiVersionCheck",
                "--loose",
                "--location", str(self.workdir),
                "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
                "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
                "--tableHost", "127.0.0.1", "--tablePort", str(free_port()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
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


def start_azurite(workdir: Path | None = None) -> Azurite:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="azurite-"))
    return Azurite(blob_port=free_port(), queue_port=free_port(), workdir=workdir).start()


def _postgres_bindir() -> Path:
    explicit = os.environ.get("PG_BINDIR")
    candidates = [explicit] if explicit else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise ServiceUnavailable("PostgreSQL server binaries (initdb) not found: apt-get install postgresql")


@dataclass
class Postgres:
    """A throw-away PostgreSQL cluster in a temporary directory."""

    port: int
    workdir: Path
    bindir: Path
    as_user: str | None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://fraud@127.0.0.1:{self.port}/fraud"

    def _run(self, *args: str) -> None:
        command = list(args)
        if self.as_user:
            command = ["runuser", "-u", self.as_user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceUnavailable(f"{' '.join(args[:2])} failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> "Postgres":
        data = self.workdir / "data"
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            # initdb refuses to run as root: the cluster belongs to the postgres user.
            shutil.chown(self.workdir, user=self.as_user)
            os.chmod(self.workdir, 0o700)
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-U", "fraud", "--auth=trust",
                  "--encoding=UTF8", "--no-sync")
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.workdir / "server.log"), "-w",
            "-o", f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off "
                  f"-c max_connections=100",
            "start",
        )
        self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "fraud", "fraud")
        return self

    def stop(self) -> None:
        data = self.workdir / "data"
        if data.exists():
            try:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
            except ServiceUnavailable:
                pass
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_postgres() -> Postgres:
    bindir = _postgres_bindir()
    as_user = None
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ServiceUnavailable("running as root and no `postgres` user exists to own the cluster") from exc
        as_user = "postgres"
    workdir = Path(tempfile.mkdtemp(prefix="pgtest-"))
    return Postgres(port=free_port(), workdir=workdir, bindir=bindir, as_user=as_user).start()


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}
