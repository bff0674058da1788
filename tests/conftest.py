"""Shared fixtures. Tests run offline, on one CPU thread, with seeded RNGs."""

from __future__ import annotations

import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

SMALL_BACKBONE = "edgenext_xx_small"


@pytest.fixture
def seed() -> int:
    """Seed every RNG the code under test may touch; returns the seed."""
    value = 1234
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)
    return value


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep decoded-image caches out of the user's home folder."""
    monkeypatch.setenv("CAMOTUNE_CACHE", str(tmp_path_factory.getbasetemp() / "camotune-cache"))
