"""camotune's benchmark suite: every benchmark in one run, one table of ratios side by side.

    python benchmarks/run.py --quick      # make bench: <= 10 minutes on 2 quiet cores
    python benchmarks/run.py --full       # make bench-full
    python benchmarks/run.py --quick --only loader,fit --json out.json --markdown out.md

Benchmarks (each also runs alone, with the command shown in its rows):

| name | script | ratios |
| --- | --- | --- |
| loader | bench_loader.py | cached loader / training step (goal >= 3), cold decode / step |
| fit | bench_fit.py | `fit` / bare PyTorch loop imgs_per_s (>= 0.97); host reads per epoch |
| moe | bench_model.py | vectorised MoE / per-sample loop; their output difference |
| asha | bench_asha.py | ASHA (Ray's rule replayed on real FIFO curves, checked by one real ASHA sweep) vs FIFO: best-IoU gap (<= 0.02 every seed), FIFO's best kept (every seed), compute (<= 0.40), rank correlation, rung-metric and grace variants |
| overhead | bench_overhead.py | Tune + MLflow useful/allocated over the trial phase (>= 0.95) and per-trial start-up on a slot (median <= 1 s), judged with >= 8 trials a slot and >= 10 s epochs (full); quick: 2 trials a slot, 3 s epochs, not judged |

The table lists, per ratio, its value, goal, whether the goal is met (blank: informational),
the machine (described above the table) and the command that reproduces it. The figures the
ratios come from follow. A benchmark that raises is reported as a failed row and the suite
exits 1; unmet goals do not change the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

BENCHMARKS = {"loader": "bench_loader", "fit": "bench_fit", "moe": "bench_model",
              "asha": "bench_asha", "overhead": "bench_overhead"}


def run_one(name: str, quick: bool, device: str, threads: int) -> tuple[list[dict], float,
                                                                          str | None]:
    """(rows, seconds, error) of one benchmark."""
    import torch

    torch.set_num_threads(threads)
    module = importlib.import_module(BENCHMARKS[name])
    kwargs: dict[str, Any] = {"threads": threads} if name in ("fit", "moe") else {}
    t0 = time.perf_counter()
    try:
        rows = module.run(quick, device, **kwargs)
        error = None
    except Exception as exc:
        traceback.print_exc()
        rows, error = [], f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return rows, time.perf_counter() - t0, error


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    load_end = result.get("load_1min_end")
    lines = [
        f"camotune benchmarks ({result['mode']}), {result['started']}, "
        f"{result['seconds']:.0f} s in all ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in result["bench_seconds"].items()) + ")",
        "",
        f"Machine M1: {benchlib.machine_line(m)}"
        + (f" at the start, {load_end:.1f} at the end" if load_end is not None else ""),
        "",
        "| # | ratio | value | goal | met | machine | command |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(result["ratios"], 1):
        met = {True: "yes", False: "**no**", None: ""}[r.get("met")]
        value = benchlib.format_value(r["value"], r.get("unit", ""))
        unit = "" if r.get("unit") in ("x", None) else f" {r['unit']}"
        lines.append(f"| {i} | {r['name']} | {value}{unit} | {r['goal']} | {met} | M1 | "
                     f"`{r['command']}` |")
    lines += ["", "Figures behind the ratios:", "", "| benchmark | figure | value | unit |",
              "| --- | --- | --- | --- |"]
    for r in result["figures"]:
        lines.append(f"| {r['bench']} | {r['name']} | "
                     f"{benchlib.format_value(r['value'], r.get('unit', ''))} | {r['unit']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run camotune's benchmarks; print one ratio table.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small settings (the default)")
    mode.add_argument("--full", action="store_true", help="the full settings")
    p.add_argument("--only", default="", help="comma-separated subset of: "
                   + ", ".join(BENCHMARKS))
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads of the in-process benchmarks (default 1)")
    p.add_argument("--json", type=Path, help="also write every row and the machine as JSON")
    p.add_argument("--markdown", type=Path, help="also write the tables as markdown")
    a = p.parse_args(argv)
    quick = not a.full
    names = [n.strip() for n in a.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        p.error(f"--only: unknown benchmark(s) {', '.join(unknown)}")
    import torch

    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(a.threads)
    machine = benchlib.machine_info(device)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "mode": "quick" if quick else "full", "machine": machine,
        "started": datetime.now().isoformat(timespec="seconds"),
        "ratios": [], "figures": [], "bench_seconds": {}, "errors": {},
    }
    print(f"[bench] {result['mode']} on {benchlib.machine_line(machine)}", file=sys.stderr)
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        rows, seconds, error = run_one(name, quick, device, a.threads)
        result["bench_seconds"][name] = seconds
        print(f"[bench] {name}: {seconds:.0f} s", file=sys.stderr, flush=True)
        if error is not None:
            result["errors"][name] = error
            result["ratios"].append(benchlib.ratio_row(
                f"{name}_failed", f"{name} benchmark FAILED: {error}", None, "runs", False,
                f"python benchmarks/{BENCHMARKS[name]}.py" + (" --quick" if quick else "")))
        for r in rows:
            r = {**r, "bench": name, "machine": "M1"}
            result["ratios" if "key" in r else "figures"].append(r)
    result["seconds"] = time.perf_counter() - started
    result["load_1min_end"] = benchlib.load_average()
    text = markdown(result)
    print(text)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1, default=str))
    if a.markdown:
        a.markdown.write_text(text)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
