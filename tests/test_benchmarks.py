"""benchmarks/gpu.sh runs end to end on the CPU with torch and timm alone (ray, mlflow, optuna,
albumentations and pysodmetrics refused), as it must on the GPU machines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_gpu_script_runs_on_the_cpu_without_the_sweep_stack(tmp_path: Path) -> None:
    env = {**os.environ, "DEVICE": "cpu", "QUICK": "1", "SIZE": "32",
           "BACKBONE": "edgenext_xx_small", "BATCHES": "2", "PRECISIONS": "fp32",
           "STEP_BATCHES": "2", "MAXB_CAP": "4", "PACK_PROCS": "1", "PACK_SECONDS": "1",
           "PACK_BATCH": "2", "MEASURE_S": "0.2", "BUDGET_S": "120", "THREADS": "1",
           "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh")], env=env,
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "gpu-bench.json").read_text())
    assert data["errors"] == {}
    assert data["machine"]["device"] == "cpu"
    ceiling = data["sections"]["ceiling"]["fp32"]["2"]
    assert isinstance(ceiling, float) and ceiling > 0
    assert data["sections"]["packing"][0]["aggregate_images_per_s"] > 0
    assert data["sections"]["step"][0]["images_per_s"] > 0
    assert "# camotune GPU benchmark (quick)" in (tmp_path / "gpu-bench.md").read_text()
