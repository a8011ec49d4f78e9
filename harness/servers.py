"""Start the real local services tests, benchmarks and scripts need: Azurite and PostgreSQL.

Both run from this machine's own binaries in a temporary directory on free
ports. When a service cannot be started locally the caller skips with the
reason; in CI (``CI=true``) it must start, so the caller fails instead.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devhost.azurite import Azurite, AzuriteUnavailable, free_port


class ServiceUnavailable(RuntimeError):
    """The service cannot be started on this machine (the reason is the message)."""


def start_azurite(workdir: Path | None = None) -> Azurite:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="azurite-"))
    try:
        return Azurite(blob_port=free_port(), queue_port=free_port(), workdir=workdir).start()
    except AzuriteUnavailable as exc:
        raise ServiceUnavailable(str(exc)) from exc


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

    def _run(self, *args: str, timeout: float | None = None) -> None:
        command = list(args)
        if self.as_user:
            command = ["runuser", "-u", self.as_user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise ServiceUnavailable(f"{' '.join(args[:2])} failed: {result.stderr.strip() or result.stdout.strip()}")

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), *args, timeout=120)

    def start(self) -> Postgres:
        """Create the cluster and its ``fraud`` database, and start the server."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            # initdb refuses to run as root: the cluster belongs to the postgres user.
            shutil.chown(self.workdir, user=self.as_user)
            os.chmod(self.workdir, 0o700)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "fraud", "--auth=trust",
                  "--encoding=UTF8", "--no-sync")
        self.start_server()
        self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "fraud", "fraud")
        return self

    def start_server(self) -> None:
        """Start the server on the existing cluster (same data, same port)."""
        self._pg_ctl("-l", str(self.workdir / "server.log"), "-w",
                     "-o", f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off "
                           f"-c max_connections=100", "start")

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server and keep the cluster: clients get "connection refused" until
        :meth:`start_server` (an outage)."""
        self._pg_ctl("-m", mode, "-w", "stop")

    def stop(self) -> None:
        """Stop the server and delete the cluster."""
        if self.data.exists():
            try:
                self.stop_server("immediate")
            except (ServiceUnavailable, subprocess.TimeoutExpired):
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
