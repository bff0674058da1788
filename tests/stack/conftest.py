"""The tracking stack a team runs, started from nothing on 127.0.0.1: PostgreSQL, and an
``mlflow server`` whose backend store is that PostgreSQL and whose artifacts it serves itself
(``--serve-artifacts --artifacts-destination DIR``, no shared artifact folder for clients).

PostgreSQL is a fixture of this folder (`servers.PostgreSQL`): a throwaway ``initdb`` cluster
run in the foreground of its own process group, so a finalizer can always kill it, and run as
the ``postgres`` user when the tests run as root (PostgreSQL refuses root). pytest-postgresql
would do the same with ``pg_ctl`` (a daemon outside the test's process group) and a fixed user.
"""

from __future__ import annotations

import secrets

import pytest
from servers import MlflowServer, PostgreSQL, free_port, mlflow_command, postgres_bin


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server on 127.0.0.1 (password auth) for the session; skipped, with the
    reason, where PostgreSQL's binaries are not installed."""
    folder = postgres_bin()
    if folder is None:
        pytest.skip("PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin "
                    "or on PATH): apt-get install postgresql, as .ci/run does")
    server = PostgreSQL(folder)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_mlflow(postgres: PostgreSQL, tmp_path_factory: pytest.TempPathFactory):
    """``mlflow server --backend-store-uri postgresql+psycopg2://... --serve-artifacts
    --artifacts-destination DIR`` on 127.0.0.1 and a free port; `MlflowServer.stop` and
    `MlflowServer.start` restart it on the same port and store. Stopped at the end."""
    folder = tmp_path_factory.mktemp("pg-mlflow")
    store = postgres.create_database("camotune", "camotune", secrets.token_hex(16))
    port = free_port()
    server = MlflowServer(mlflow_command(store, folder / "artifacts", port), port, folder)
    try:
        server.start()
        yield server
    finally:
        server.stop()
