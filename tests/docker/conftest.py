"""Fixtures for the container and cluster file tests (see tests/cluster_files.py)."""

from __future__ import annotations

from typing import Any

import pytest
from cluster_files import DOCKER, SECRET_VARS, load_compose, load_manifests, read_env_file


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return load_compose("compose.yaml")


@pytest.fixture(scope="session")
def hosts_override() -> dict[str, Any]:
    return load_compose("compose.hosts.yaml")


@pytest.fixture(scope="session")
def env_example() -> dict[str, str]:
    return read_env_file(DOCKER / ".env.example")


@pytest.fixture(scope="session")
def filled_env(env_example: dict[str, str]) -> dict[str, str]:
    """The example env with its secrets and the multi-host addresses filled in."""
    env = dict(env_example)
    env.update({name: "0" * 64 for name in SECRET_VARS})
    env.update(RAY_NODE_IP="10.0.0.2", RAY_HEAD_ADDRESS="10.0.0.1:6379")
    return env


@pytest.fixture(scope="session")
def manifests() -> dict[str, list[dict[str, Any]]]:
    return load_manifests()
