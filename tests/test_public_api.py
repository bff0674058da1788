"""The public names of each package import, and the docs' Ray Tune example runs as written."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("camotune.model", "camotune.trainer", "camotune.spaces", "camotune.search",
            "camotune.results", "camotune.tracking", "camotune.sweepdir")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_imports(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__
    for name in module.__all__:
        assert getattr(module, name) is not None, name
        assert name in dir(module)


def test_the_documented_trainer_api() -> None:
    from camotune.model import CamoXpert, build_model
    from camotune.trainer import FitResult, TrainConfig, fit, from_argv, to_argv

    cfg = from_argv(to_argv(TrainConfig(epochs=40, lr=1e-3)))
    assert cfg == TrainConfig(epochs=40, lr=1e-3)
    assert callable(fit) and callable(build_model)
    assert isinstance(FitResult, type) and isinstance(CamoXpert, type)


def test_unknown_names_raise_attribute_error() -> None:
    import camotune.trainer

    with pytest.raises(AttributeError):
        _ = camotune.trainer.no_such_name


def _example() -> str:
    text = (ROOT / "docs" / "python-api.md").read_text()
    match = re.search(r"<!-- ray-tune-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "docs/python-api.md lost its Ray Tune example"
    return match.group(1)


@pytest.mark.slow
def test_the_ray_tune_example_runs_as_written(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(_example())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_DEDUP_LOGS": "0"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^best lr \S+ val_iou \S+$", proc.stdout, re.M), proc.stdout[-2000:]
    trials = list((tmp_path / "ray_results").glob("trainable_*/trainable_*"))
    assert len(trials) == 2
