"""Fixtures of the hostile-input corpus (helpers are in hostile_lib.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 px synthetic COD10K-v3 dataset: 6 training and 2 test scenes."""
    from camotune.trainer.synth import synth

    return synth(tmp_path_factory.mktemp("hostile") / "cod", n_train=6, n_test=2, size=32,
                 seed=0)
