"""Tune + MLflow overhead of a small sweep whose epochs take about ``--epoch-seconds``.

useful / allocated seconds over the whole sweep: useful = the sum of the trials' epoch
``epoch_time_s`` (training + validation, from trials.jsonl); allocated = trial slots x the
wall time of ``camotune sweep`` from start to exit (Ray start-up, the MLflow store, trial
start-up, checkpoints and the final results included). Also the same ratio over the trial phase
alone (first trial start to last trial end), which leaves out the sweep's fixed start and end.

The dataset is sized from a short timing of the model's training step at one thread so that an
epoch lasts at least about ``--epoch-seconds``; trials run slower than that bare step (loading,
augmentation, validation, and the other trials and the driver sharing the CPUs: ~2.5x on 2
cores), so the epochs come out longer, never shorter. The row gives the real epoch length. The sweep: FIFO, 2 x slots trials of
``--epochs`` epochs, one CPU per trial, the same model as bench_asha (sweeplib.BASE_FIXED).

    python benchmarks/bench_overhead.py [--epoch-seconds 12] [--epochs 2] [--quick]

Quick mode targets 3 s epochs (the ratio is then lower than with real epochs: say so).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import benchlib
import sweeplib


def train_rate(batch: int = 8, steps: int = 4) -> float:
    """Images/s of the benchmark model's training step at 64 px on one thread."""
    import torch

    from camotune.model import UNFREEZE_LEVELS, CamoXpert
    from camotune.trainer.losses import CamoLoss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = CamoXpert("edgenext_xx_small", pretrained=False)
        model.set_backbone_trainable(UNFREEZE_LEVELS)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randn(batch, 3, 64, 64)
        y = (torch.rand(batch, 1, 64, 64) > 0.7).float()
        loss_fn = CamoLoss()

        def step() -> None:
            loss, _ = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * batch / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)


def run(quick: bool = True, device: str = "cpu", *, epoch_seconds: float = 0.0,
        epochs: int = 2, slots: int = 0) -> list[dict]:
    """Run one sized sweep and return rows (see benchlib); key ``tune_overhead``."""
    from camotune.trainer.synth import synth

    epoch_seconds = epoch_seconds or (3.0 if quick else 12.0)
    slots = slots or max(1, min(4, benchlib.cpus_available()))
    rate = train_rate()
    # one thread per trial and at most one trial per CPU: each trial trains at about `rate`
    n_train = max(16, math.ceil(epoch_seconds * rate))
    n_images = math.ceil(n_train / (1 - sweeplib.BASE_FIXED["val_fraction"]))
    n_trials = 2 * slots
    command = (f"python benchmarks/bench_overhead.py --epoch-seconds {epoch_seconds:g} "
               f"--epochs {epochs}" + (" --quick" if quick else ""))
    points = [{"lr": 1e-3 * (1 + i / 10), "batch_size": 8, "aug_strength": 1.0}
              for i in range(n_trials)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = synth(tmp_path / "data", n_train=n_images, n_test=0, size=64, difficulty=0.1,
                     noncam=0)
        space = sweeplib.write_space(tmp_path / "space.yaml", epochs=epochs, points=points)
        sw = sweeplib.run_sweep(name="overhead", space=space, dataset=data,
                                storage=tmp_path / "runs", cache=tmp_path / "cache",
                                scheduler="fifo", num_samples=n_trials, seed=0, slots=slots,
                                grace_period=1)
    ratio, epoch_s = sw.useful_over_allocated, sw.mean_epoch_s
    tag = (f"FIFO, {n_trials} trials x {epochs} epochs of {epoch_s:.1f} s ({n_train} images "
           f"at 64 px), {slots} slots")
    return [
        benchlib.ratio_row(
            "tune_overhead", f"Tune + MLflow useful/allocated seconds, whole sweep ({tag}; "
            f"wall {sw.wall_s:.0f} s, trial phase {sw.trial_phase_s:.0f} s)", ratio,
            ">= 0.95 once epochs take >= 10 s",
            benchlib.at_least(ratio, 0.95) if epoch_s >= 10 else None, command),
        benchlib.ratio_row(
            "tune_overhead_trials", f"useful / (slots x trial phase): per-trial overhead alone "
            f"({tag})", sw.useful_over_trial_phase, "informational", None, command),
        benchlib.figure_row(f"training step rate used to size the epochs ({rate:.1f} images/s "
                            "at 1 thread)", rate, "images/s", command),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epoch-seconds", type=float, default=0.0,
                   help="target epoch length (default 12; 3 with --quick)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--slots", type=int, default=0, help="trials at once (default: CPUs, <= 4)")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    rows = run(a.quick, epoch_seconds=a.epoch_seconds, epochs=a.epochs, slots=a.slots)
    benchlib.print_rows(rows)
    print(f"command: {rows[0]['command']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
