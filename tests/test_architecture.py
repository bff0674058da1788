"""The import rules of docs/architecture.md, enforced.

1. A static scan (ast) of every import between camotune's packages, at module level and inside
   functions, against the documented arrows; Ray only in ``search``, MLflow only in
   ``tracking``; ``search`` and ``results`` never import each other.
2. Importing ``model``, ``trainer`` (its command module too), ``spaces``, ``results`` and
   ``tracking`` in a fresh interpreter leaves ``ray`` out of ``sys.modules`` (and, but for
   ``tracking``, ``mlflow``).
3. A real ``camotune train --tracking-uri sqlite:///...`` under ``python -X importtime`` loads
   no ``ray`` module.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("camotune", "model", "trainer", "spaces", "sweepdir", "tracking", "results",
            "search", "commands")

# package -> the camotune packages it may import (docs/architecture.md, "Layers").
ALLOWED: dict[str, set[str]] = {
    "camotune": set(),
    "model": {"camotune"},
    "trainer": {"camotune", "model"},
    "spaces": {"camotune", "trainer"},
    "sweepdir": {"camotune"},
    "tracking": {"camotune", "trainer", "sweepdir"},
    "results": {"camotune", "trainer", "spaces", "sweepdir"},
    "search": {"camotune", "model", "trainer", "spaces", "sweepdir", "tracking"},
    "commands": {"camotune", "model", "trainer", "spaces", "sweepdir", "tracking", "results",
                 "search"},
}
# Command modules sit above their package: `camotune train` logs to MLflow.
MODULE_EXTRA: dict[str, set[str]] = {"trainer/commands.py": {"tracking"}}
# Third-party packages only these camotune packages may import.
THIRD_PARTY: dict[str, set[str]] = {"ray": {"search"}, "mlflow": {"tracking"},
                                    "optuna": {"search", "spaces", "results"}}


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, imported module) of every import in ``path``, inside functions too."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: within the package
                out.append((node.lineno, f"camotune.{package}"))
            elif node.module:
                out.append((node.lineno, node.module))
    return out


def _target(module: str) -> str | None:
    """The camotune package a module name belongs to, or None for a third-party one."""
    parts = module.split(".")
    if parts[0] != "camotune":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else "camotune"


def test_imports_follow_the_documented_arrows() -> None:
    wrong = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            allowed = ALLOWED[package] | MODULE_EXTRA.get(rel, set()) | {package}
            for line, module in _imports(path, package):
                target = _target(module)
                top = module.split(".")[0]
                if target is not None and target not in allowed:
                    wrong.append(f"{rel}:{line} imports {module}")
                if top in THIRD_PARTY and package not in THIRD_PARTY[top]:
                    wrong.append(f"{rel}:{line} imports {module}")
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_search_and_results_never_import_each_other() -> None:
    assert "results" not in ALLOWED["search"] and "search" not in ALLOWED["results"]


def test_the_rules_are_the_documented_ones() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for package, allowed in ALLOWED.items():
        if package == "camotune":
            continue
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{package}/`")),
                   None)
        assert row is not None, f"docs/architecture.md has no row for {package}/"
        may_import = row.rstrip(" |").rsplit("|", 1)[-1]
        for name in allowed - {"camotune"}:
            assert f"`{name}`" in may_import, (package, name, row)


# Each package's imports, in one fresh interpreter, in this order: ray and mlflow are checked
# after each step, so the first step that brings one in is the one named (a package that
# imports an earlier one inherits its verdict, which that step already checked).
LAYERS = [
    ("model", "import camotune.model", False),
    ("trainer", "import camotune.trainer\nfrom camotune.trainer import *\n"
     "import camotune.trainer.commands, camotune.trainer.evaluate, camotune.trainer.diagnose, "
     "camotune.trainer.synth", False),
    ("spaces", "import camotune.spaces\nfrom camotune.spaces import *", False),
    ("results", "import camotune.results\nfrom camotune.results import *\n"
     "import camotune.results.commands, camotune.results.finalize", False),
    ("sweepdir", "import camotune.sweepdir", False),
    ("tracking", "import camotune.tracking\nfrom camotune.tracking import *\n"
     "import camotune.tracking.confirm_runs, camotune.tracking.repro", True),
]


def _loaded_after_each(layers) -> dict[str, dict[str, bool]]:
    steps = "".join(
        f"{code}\nout[{name!r}] = {{m: m in sys.modules for m in ('ray', 'mlflow')}}\n"
        for name, code, _ in layers)
    probe = f"import json, sys\nout = {{}}\n{steps}print(json.dumps(out))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a fresh interpreter importing torch
def test_ray_and_mlflow_stay_out() -> None:
    loaded = _loaded_after_each(LAYERS)
    for name, code, mlflow_ok in LAYERS:
        assert not loaded[name]["ray"], f"{code!r} imported ray"
        assert mlflow_ok or not loaded[name]["mlflow"], f"{code!r} imported mlflow"


@pytest.mark.slow  # a real training run with MLflow tracking
def test_train_with_tracking_loads_no_ray(tmp_path: Path) -> None:
    from camotune.trainer.synth import synth

    data = synth(tmp_path / "data", n_train=8, n_test=2, size=32, seed=0)
    db = tmp_path / "tmp.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "camotune", "train",
         "--tracking-uri", f"sqlite:///{db}", "--dataset-path", str(data),
         "--checkpoint-dir", str(tmp_path / "ckpt"), "--backbone", "edgenext_xx_small",
         "--no-pretrained", "--img-size", "32", "--epochs", "1", "--stage1-epochs", "1",
         "--batch-size", "2", "--accumulation-steps", "1", "--num-workers", "0"],
        capture_output=True, text=True, timeout=540, cwd=tmp_path,
        env={**env, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
               if line.startswith("import time:")]
    assert any(m == "mlflow" for m in modules), "the run did not track (no mlflow import)"
    assert not [m for m in modules if m == "ray" or m.startswith("ray.")]
    assert db.is_file() and (tmp_path / "ckpt" / "best.pt").is_file()
