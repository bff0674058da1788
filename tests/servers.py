"""Real servers for the tests, started on 127.0.0.1 and always stopped: ``mlflow server`` (any
backend store) and PostgreSQL.

Each server runs in its own process group (``start_new_session``), so stopping it reaches its
worker processes too: SIGTERM to the group, then SIGKILL to whatever of the group is left.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SERVER_START_TIMEOUT_S = 120  # mlflow: ~8 s on an idle machine; much longer on a loaded 2-core one


def free_port() -> int:
    """A TCP port nobody listens on right now (bound and released)."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports nobody listens on right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def healthy(uri: str) -> bool:
    """Whether ``GET <uri>/health`` answers 200."""
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen, log: Path, what: str,
               timeout: float = SERVER_START_TIMEOUT_S) -> None:
    """Poll ``ready`` until true; raise with the log's tail when ``proc`` exits or time is up."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{what} did not come up:\n{tail}")
        time.sleep(0.5)


def stop_group(proc: subprocess.Popen, grace: float = 3.0,
               first: signal.Signals = signal.SIGTERM) -> None:
    """``first`` (SIGTERM) to ``proc``'s process group, then SIGKILL to whatever of the group
    is left after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, first)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without MLflow's settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", **extra)
    return env


@dataclass
class MlflowServer:
    """``mlflow server`` on 127.0.0.1:``port``; `start` and `stop` can be called again (same
    command, port and store: a restart)."""

    command: list[str]
    port: int
    folder: Path      # the server's working folder and log
    env: dict[str, str] = field(default_factory=clean_env)
    proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def start(self, api_call: bool = True) -> None:
        """Start the server; return once ``/health`` and (``api_call``) one API call have
        answered."""
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env, cwd=self.folder, start_new_session=True)
        wait_until(lambda: healthy(self.uri), self.proc, self.log, f"mlflow server on {self.uri}")
        if not api_call:
            return
        # /health answers before the tracking store is loaded; the first API call loads it,
        # which can take longer than a client's reachability check on a busy machine.
        with urllib.request.urlopen(f"{self.uri}/api/2.0/mlflow/experiments/search?"
                                    "max_results=1", timeout=SERVER_START_TIMEOUT_S):
            pass

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None


def mlflow_command(backend_store_uri: str, artifacts: Path, port: int) -> list[str]:
    """``mlflow server`` with ``backend_store_uri`` and artifacts served from ``artifacts``
    (``--serve-artifacts``: clients up- and download through the server)."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
            "--serve-artifacts", "--artifacts-destination", str(artifacts),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


@contextlib.contextmanager
def running_mlflow(backend_store_uri: str, folder: Path):
    """An `MlflowServer` on a free port, stopped (its whole process group) on exit."""
    port = free_port()
    server = MlflowServer(mlflow_command(backend_store_uri, folder / "artifacts", port), port,
                          folder)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- PostgreSQL -------------------------------------------------------------------------------

def postgres_bin() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``: Debian's newest versioned folder, else
    the one of ``initdb`` on PATH; None when PostgreSQL is not installed."""
    folders = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                     key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for folder in reversed(folders):
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


@dataclass
class PostgreSQL:
    """A throwaway PostgreSQL cluster: ``initdb`` into a fresh folder, ``postgres`` in the
    foreground of its own process group, listening on 127.0.0.1:``port`` (password auth,
    scram-sha-256) and on a unix socket in that folder only.

    PostgreSQL refuses to run as root, so under root ``initdb`` and ``postgres`` run as the
    ``postgres`` system user (Popen's ``user``/``group``), and the folder is made under /tmp
    and handed to that user (pytest's own tmp folders are private to root). fsync is off: the
    data is thrown away."""

    bin: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ct-pg-", dir="/tmp")))
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def _owner(self) -> dict:
        """Popen's arguments that run a command as the folder's owner."""
        if os.geteuid() != 0:
            return {"cwd": self.root}
        return {"cwd": self.root, "user": "postgres", "group": "postgres", "extra_groups": []}

    def start(self) -> None:
        data, sock = self.root / "data", self.root / "sock"
        sock.mkdir()
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(sock, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
            self.root.chmod(0o700)
        subprocess.run([str(self.bin / "initdb"), "-D", str(data), "-U", "postgres",
                        f"--pwfile={pwfile}", "-E", "UTF8", "--auth-local=trust",
                        "--auth-host=scram-sha-256", "--no-sync"],
                       check=True, capture_output=True, timeout=120, **self._owner())
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(data), "-c", "listen_addresses=127.0.0.1",
                 "-p", str(self.port), "-c", f"unix_socket_directories={sock}",
                 "-c", "fsync=off", "-c", "full_page_writes=off"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **self._owner())
        wait_until(self._accepts, self.proc, self.log, f"PostgreSQL on 127.0.0.1:{self.port}")

    def _accepts(self) -> bool:
        import psycopg2

        try:
            psycopg2.connect(self.dsn("postgres"), connect_timeout=2).close()
        except psycopg2.OperationalError:
            return False
        return True

    def dsn(self, database: str, user: str = "postgres", password: str | None = None,
            scheme: str = "postgresql") -> str:
        return (f"{scheme}://{user}:{password or self.password}@127.0.0.1:{self.port}/"
                f"{database}")

    def create_database(self, name: str, owner: str = "postgres",
                        password: str | None = None) -> str:
        """Create database ``name`` owned by ``owner`` (a new login role when not the
        superuser); returns its SQLAlchemy URI, ``postgresql+psycopg2://`` (SQLAlchemy 2.1's
        bare ``postgresql://`` means psycopg 3, which is not installed)."""
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(self.dsn("postgres"))
        conn.autocommit = True  # CREATE DATABASE runs outside a transaction
        try:
            with conn.cursor() as cur:
                if owner != "postgres":
                    cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(
                        sql.Identifier(owner)), [password])
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(owner)))
        finally:
            conn.close()
        return self.dsn(name, owner, password, scheme="postgresql+psycopg2")

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the group), SIGKILL for what is left, folder removed."""
        if self.proc is not None:
            stop_group(self.proc, grace=10, first=signal.SIGINT)
            self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)
