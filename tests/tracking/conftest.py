"""A real ``mlflow server`` for the tracking tests (and any other search test that needs one)."""

from __future__ import annotations

import pytest
from servers import running_mlflow


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """``mlflow server`` on 127.0.0.1 and a free port: sqlite backend and served artifacts in a
    temporary folder, up (``GET /health`` = 200) before the first test uses it, killed with its
    worker processes at the end of the session."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    with running_mlflow(f"sqlite:///{folder / 'mlflow.db'}", folder) as server:
        yield server
