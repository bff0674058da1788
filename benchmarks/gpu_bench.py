"""GPU benchmark of camotune's model and training step, with torch and timm alone.

Run it through benchmarks/gpu.sh (settings are environment variables, listed there). It
imports camotune from this checkout without installing it, and refuses ray, mlflow, optuna,
albumentations and pysodmetrics (the GPU machines have none of them). Sections, each bounded
by a share of the time budget (``BUDGET_S``):

1. ceiling: forward+backward images/s of CamoXpert (``BACKBONE``, default edgenext_base) at
   ``SIZE`` px on tensors already on the GPU, by batch size, in fp32 and bf16 (autocast);
2. step: camotune's `GradientAccumulator` (CamoLoss, AdamW, accumulation, clipping) against the ceiling at
   the same batch and precision, with the host syncs it makes (CUDA sync debug mode); and the
   same step fed from pinned uint8 host batches through `fit`'s `device_batches`;
3. max batch: the largest bf16 training batch that fits, per image size;
4. packing: aggregate images/s of 1, 2 and 4 ``SMALL_BACKBONE`` training processes at once;
5. (full mode) bf16 + torch.compile ceiling, in a child process killed at the budget's end.

Results: ``$OUT/gpu-bench.json`` and ``$OUT/gpu-bench.md`` (rewritten after every section,
so a run cut short keeps what it measured); the markdown is printed at the end. Exit 1 when a
section raised (its error is in the results), else 0 whether or not the goals are met.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpulib

gpulib.refuse_imports()
gpulib.use_source_tree()

import gpu_pack  # noqa: E402
import gpu_report  # noqa: E402
import gpu_sections as sec  # noqa: E402
import torch  # noqa: E402


def machine(s: dict[str, Any]) -> dict[str, Any]:
    import benchlib
    import timm

    info: dict[str, Any] = {
        "cpu": benchlib.cpu_model(), "cores": benchlib.cpus_available(),
        "python": platform.python_version(), "torch": torch.__version__,
        "timm": timm.__version__, "device": s["device"], "gpu": None,
    }
    if s["device"] == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported(),
                    matmul_tf32=getattr(torch.backends.cuda.matmul, "allow_tf32", None),
                    cudnn_tf32=getattr(torch.backends.cudnn, "allow_tf32", None))
    return info


class Run:
    """The results of one run, written to $OUT after every section."""

    def __init__(self, s: dict[str, Any]) -> None:
        self.s = s
        self.t0 = time.monotonic()
        self.out = Path(s["out"])
        self.out.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {"settings": s, "machine": machine(s), "sections": {},
                                     "errors": {}}
        self.failed = False

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def deadline(self, share: float) -> float:
        """Monotonic time by which a section must stop starting new measurements."""
        return self.t0 + share * self.s["budget_s"]

    def section(self, name: str, fn, *args: Any) -> Any:
        """``fn(*args)``, recorded under ``name``; an exception is recorded (the run then
        exits 1) and the next section runs."""
        t = time.monotonic()
        try:
            value = fn(*args)
        except Exception as exc:
            self.failed = True
            self.data["errors"][name] = "".join(
                traceback.format_exception_only(type(exc), exc)).strip()
            print(f"[gpu-bench] {name} failed:\n{traceback.format_exc()}", file=sys.stderr)
            value = None
        else:
            self.data["sections"][name] = value
        print(f"[gpu-bench] {name}: {time.monotonic() - t:.1f} s (total {self.elapsed():.1f} s)",
              file=sys.stderr, flush=True)
        self.save()
        return value

    def save(self) -> None:
        self.data["wall_s"] = round(self.elapsed(), 1)
        gpulib.write_json(self.out / "gpu-bench.json", self.data)
        (self.out / "gpu-bench.md").write_text(gpu_report.markdown(self.data))


def main() -> int:
    s = gpulib.settings()
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    device = torch.device(s["device"])
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("DEVICE=cuda but no CUDA device is visible (DEVICE=cpu for a CPU check)",
                  file=sys.stderr)
            return 2
        torch.backends.cudnn.benchmark = s["cudnn_benchmark"]  # fit turns it on (fixed shapes)
    run = Run(s)
    shares = [0.3, 0.4, 0.52, 1.0] if s["quick"] else [0.15, 0.2, 0.27, 0.37, 1.0]
    with tempfile.TemporaryDirectory() as control:
        # started first: they import and build their model on the CPU meanwhile
        packers = gpu_pack.Packers(max(s["pack_procs"]), Path(control)) \
            if s["pack_procs"] else None
        try:
            model = sec.build_model(s["backbone"], device)
            if packers is not None:  # their start-up must not compete with the measurements
                packers.wait_ready(timeout=30)
            run.section("ceiling", sec.ceiling, model, s, device, run.deadline(shares[0]))
            run.section("step", sec.training_step, model, s, device, run.deadline(shares[1]))
            run.section("max_batch", sec.max_batch, model, s, device, run.deadline(shares[2]))
            model = None  # the packed processes get the device to themselves
            gpulib.free_memory(device)
            if packers is not None:
                run.section("packing", _packing, packers, s, run.deadline(shares[3]))
        finally:
            if packers is not None:
                packers.stop()
    if "bf16+compile" in s["precisions"]:
        remaining = s["budget_s"] - run.elapsed() - 3
        run.section("compile", gpu_pack.run_compile, s, run.out, remaining)
    run.save()
    print(gpu_report.markdown(run.data))
    print(f"[gpu-bench] results in {run.out}/gpu-bench.json and gpu-bench.md "
          f"({run.elapsed():.0f} s)", file=sys.stderr)
    return 1 if run.failed else 0


def _packing(packers: gpu_pack.Packers, s: dict[str, Any], deadline: float) -> list[dict]:
    # 4 processes importing torch and building their model took > 30 s on an H200 host
    packers.warm(timeout=max(75.0, deadline - time.monotonic()))
    phases = []
    for n in sorted(s["pack_procs"]):
        phases.append(packers.phase(n, s["pack_seconds"]))
    return phases


def worker_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="gpu_bench.py worker modes (internal)")
    p.add_argument("--pack-worker", type=int)
    p.add_argument("--control", type=Path)
    p.add_argument("--compile-worker", type=Path)
    a = p.parse_args(argv)
    s = gpulib.settings()
    if a.compile_worker is not None:
        gpu_pack.compile_worker(a.compile_worker, s)
    else:
        gpu_pack.pack_worker(a.pack_worker, a.control, s)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]) if len(sys.argv) > 1 else main())
