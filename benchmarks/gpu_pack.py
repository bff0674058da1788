"""Several small training processes sharing one GPU, and the torch.compile ceiling, each in
their own processes (started by benchmarks/gpu_bench.py, which they re-run in a worker mode).

Packing: the workers start at the beginning of the run, import and build their model on the
CPU while the main process measures, and touch the GPU only when told to warm up. Then each
phase (1, 2, 4 processes) starts at one common wall-clock time, every active worker trains for
``pack_seconds`` and reports its images; the aggregate is the sum of their images/s. Commands
and results are files in a control folder (no sockets, nothing to install).

Compile: one process compiles CamoXpert with ``torch.compile`` and measures the bf16 ceiling at
the compile batches; the parent kills it when the time budget runs out (a compile of
edgenext_base took ~155 s), keeping what it wrote so far.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gpulib

POLL_S = 0.05


def _python() -> list[str]:
    """This interpreter, with -S when it runs without site (the not-installed check)."""
    return [sys.executable, *(["-S"] if sys.flags.no_site else [])]


def _wait_files(paths: list[Path], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if all(p.exists() for p in paths):
            return True
        time.sleep(POLL_S)
    return False


class Packers:
    """The pool of packing workers (``n`` processes), driven through ``control``."""

    def __init__(self, n: int, control: Path) -> None:
        self.n, self.control = n, control
        control.mkdir(parents=True, exist_ok=True)
        script = str(Path(__file__).with_name("gpu_bench.py"))
        self.procs = [
            subprocess.Popen([*_python(), script, "--pack-worker", str(i), "--control",
                              str(control)], stdout=subprocess.DEVNULL,
                             stderr=open(control / f"worker{i}.log", "w"))  # noqa: SIM115
            for i in range(n)]

    def _command(self, name: str, data: dict[str, Any]) -> None:
        gpulib.write_json(self.control / name, data)

    def wait_ready(self, timeout: float) -> bool:
        """Whether every worker has built its model (on the CPU) within ``timeout`` s."""
        return _wait_files([self.control / f"ready{i}" for i in range(self.n)], timeout)

    def warm(self, timeout: float) -> None:
        if not self.wait_ready(timeout):
            raise RuntimeError("packing workers did not start in time: " + self._logs())
        self._command("warm.json", {})
        warm = [self.control / f"warm{i}" for i in range(self.n)]
        if not _wait_files(warm, timeout):
            raise RuntimeError("packing workers did not warm up in time: " + self._logs())

    def phase(self, active: int, seconds: float) -> dict[str, Any]:
        start = time.time() + 0.5
        self._command(f"phase{active}.json", {"active": active, "start": start,
                                              "seconds": seconds})
        results = [self.control / f"result{active}_{i}.json" for i in range(active)]
        if not _wait_files(results, seconds + 30):
            raise RuntimeError(f"phase {active}: workers did not report: " + self._logs())
        per = [json.loads(p.read_text()) for p in results]
        rates = [r["images"] / r["seconds"] for r in per]
        return {"processes": active, "aggregate_images_per_s": sum(rates),
                "per_process": rates, "peak_gib": [r.get("peak_gib") for r in per]}

    def _logs(self) -> str:
        tails = []
        for i in range(self.n):
            log = self.control / f"worker{i}.log"
            text = log.read_text().strip().splitlines() if log.exists() else []
            if text:
                tails.append(f"worker{i}: {text[-1]}")
        return "; ".join(tails) or "no worker output"

    def stop(self) -> None:
        self._command("stop.json", {})
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def pack_worker(index: int, control: Path, s: dict[str, Any]) -> None:
    """Worker mode: build the small model on the CPU, then obey warm/phase/stop commands."""
    import itertools

    import gpu_sections as sec
    import torch

    torch.set_num_threads(max(1, s["threads"] or 1))
    device = torch.device(s["device"])
    cpu = torch.device("cpu")
    model = sec.build_model(s["small_backbone"], cpu)
    (control / f"ready{index}").touch()
    parent = os.getppid()
    trainer = step = None
    done: set[str] = set()
    while True:
        if os.getppid() != parent or (control / "stop.json").exists():
            return
        if "warm" not in done and (control / "warm.json").exists():
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = True
                model = model.to(device, memory_format=torch.channels_last)
            dtype = torch.bfloat16 if device.type == "cuda" else None
            trainer = sec.make_trainer(model, device, dtype, 1)
            x, y = sec.inputs(s["pack_batch"], s["pack_size"], device)
            step = sec.train_chunk(trainer, lambda x=x, y=y: itertools.repeat((x, y)), 2,
                                   s["pack_batch"])
            step()
            step()
            gpulib.sync(device)
            done.add("warm")
            (control / f"warm{index}").touch()
        for active in s["pack_procs"]:
            name = f"phase{active}.json"
            if name in done or not (control / name).exists() or step is None:
                continue
            done.add(name)
            if index >= active:
                continue
            cmd = json.loads((control / name).read_text())
            while time.time() < cmd["start"]:
                time.sleep(0.001)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0, images = time.perf_counter(), 0
            while time.time() < cmd["start"] + cmd["seconds"]:
                images += step()
            gpulib.sync(device)
            seconds = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" \
                else None
            gpulib.write_json(control / f"result{active}_{index}.json",
                              {"images": images, "seconds": seconds, "peak_gib": peak})
        time.sleep(POLL_S)


def run_compile(s: dict[str, Any], out: Path, timeout: float) -> dict[str, Any]:
    """The bf16+compile ceiling in a child process, killed after ``timeout`` seconds."""
    result_file = out / "compile.json"
    result_file.unlink(missing_ok=True)
    script = str(Path(__file__).with_name("gpu_bench.py"))
    log = out / "compile.log"
    t0 = time.monotonic()
    with log.open("w") as fh:
        # its own process group: Inductor's compile workers go with it when it is killed
        proc = subprocess.Popen([*_python(), script, "--compile-worker", str(result_file)],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=max(1.0, timeout))
            status = "finished" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = f"killed after {timeout:.0f} s (time budget)"
    data = json.loads(result_file.read_text()) if result_file.exists() else {}
    data.update(status=status, wall_s=time.monotonic() - t0)
    if proc.returncode not in (0, None) and "killed" not in status:
        data["log_tail"] = log.read_text().splitlines()[-5:]
    return data


def compile_worker(result_file: Path, s: dict[str, Any]) -> None:
    """Worker mode: compile the model, then the ceiling at each compile batch (bf16)."""
    import gpu_sections as sec
    import torch

    device = torch.device(s["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = sec.build_model(s["backbone"], device)
    compiled = torch.compile(model)
    data: dict[str, Any] = {"images_per_s": {}, "compile_s": {}}
    for batch in s["compile_batches"]:
        x, _ = sec.inputs(batch, s["size"], device)
        step = sec.fwd_bwd(compiled, x, torch.bfloat16)
        t0 = time.perf_counter()
        step()  # the compile
        gpulib.sync(device)
        data["compile_s"][batch] = time.perf_counter() - t0
        data["images_per_s"][batch] = gpulib.rate(step, device, seconds=s["measure_s"])
        gpulib.write_json(result_file, data)
