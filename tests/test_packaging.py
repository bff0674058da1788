"""`pip install .` and `pip install -e .` both give the `camotune` package with its subpackages
mapped from the top-level folders, the console script, and the space presets."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("model", "trainer", "spaces", "search", "results", "tracking", "sweepdir",
               "commands")
# Importing the thin top-level package and the dispatcher needs nothing but the stdlib.
CHECK = """
import importlib.util, json, camotune, camotune.cli
spec = {name: importlib.util.find_spec('camotune.' + name).origin
        for name in ('model', 'trainer', 'spaces', 'search', 'results', 'tracking', 'sweepdir',
                     'commands')}
print(json.dumps({'version': camotune.__version__, 'origins': spec}))
"""


def _fresh_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin" / "python"


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", *args],
                   check=True, cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_wheel_maps_the_folders_into_camotune(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
                   check=True, timeout=600)
    wheel = next(tmp_path.glob("camotune-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for sub in SUBPACKAGES:
        assert f"camotune/{sub}/__init__.py" in names
        assert not any(n.startswith(f"{sub}/") for n in names)  # nothing generic at the top
    assert "camotune/spaces/smoke.yaml" in names
    assert "camotune/model/camoxpert.py" in names
    assert not any(n.startswith("tests/") or n.startswith("docker/") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "camotune = camotune.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()

    python = _fresh_venv(tmp_path / "venv")
    _pip(python, str(wheel))
    out = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout  # not the source tree's camotune/
    site = str(tmp_path / "venv")
    assert all(origin.startswith(site) for origin in json.loads(out)["origins"].values())
    help_text = subprocess.run([str(tmp_path / "venv" / "bin" / "camotune"), "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "sweep" in help_text and "train" in help_text


@pytest.mark.slow
def test_editable_install_points_at_the_source_folders(tmp_path: Path) -> None:
    python = _fresh_venv(tmp_path / "venv")
    _pip(python, "-e", f"{ROOT}[dev]")
    out = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout
    origins = json.loads(out)["origins"]
    for sub in SUBPACKAGES:
        assert Path(origins[sub]) == ROOT / sub / "__init__.py"
