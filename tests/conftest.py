"""Shared fixtures. Tests run offline, on one CPU thread, with seeded RNGs."""

from __future__ import annotations

import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import pytest
import torch
from hypothesis import settings

torch.set_num_threads(1)

# Property tests run the same examples every time (a fixed seed), so they cannot pass or fail
# by chance; a failure prints the blob that reproduces it. Loaded always, not only in CI.
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=100,
                          print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

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


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic COD10K-v3-layout dataset, written once per session: 24 camouflaged
    training scenes (+2 NonCAM), 8 test scenes (+1 NonCAM), 64 px, seed 0. Read-only: copy it
    before changing anything."""
    from camotune.trainer.synth import synth

    return synth(tmp_path_factory.mktemp("synth") / "cod", n_train=24, n_test=8, size=64, seed=0)
