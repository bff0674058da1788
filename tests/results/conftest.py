"""Shared by the results tests."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _keep_log_handlers():
    """The commands point logging at the captured stderr; put the handlers back after."""
    handlers, level = list(logging.root.handlers), logging.root.level
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)
