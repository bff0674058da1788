"""Tune + MLflow overhead of a sweep of many trials whose epochs take about ``--epoch-seconds``.

Useful seconds = the sum of the trials' ``epoch_time_s`` (training + validation of each epoch,
from trials.jsonl). The goal row (``tune_overhead_trials``, >= 0.95): useful / (slots x the
trial phase), the trial phase running from the first trial's start event to the last trial's
end event (driver clock). Beside it, the whole command (``tune_overhead``): useful / (slots x
wall time of ``camotune sweep`` from start to exit, Ray start-up, the MLflow store and the final
results included), which a sweep of a few minutes cannot bring near 0.95.

Per-trial start-up (``trial_startup``, goal median <= 1 s): on each slot, the seconds from the
end event of one trial to the first batch of the next trial that took the slot. The first batch
is the first epoch's event time less that epoch's ``epoch_time_s``; the event is written when
the driver receives the result, so the figure errs long (report latency and the epoch's
checkpoint count as start-up). Slots are rebuilt from the events (sweeplib.Sweep.slot_startups).

The dataset is sized from a short timing of the model's training step at one thread so that an
epoch lasts at least about ``--epoch-seconds``; trials run slower than that bare step (loading,
augmentation, validation, and the other trials and the driver sharing the CPUs), so the epochs
come out longer, not shorter. The rows give the real epoch lengths, and the goals are judged
only with >= 8 trials per slot and every epoch >= 10 s. The sweep: FIFO, ``--trials-per-slot``
x slots trials of ``--epochs`` epochs, one CPU per trial, the model of bench_asha
(sweeplib.BASE_FIXED) at 64 px.

    python benchmarks/bench_overhead.py [--epoch-seconds 10] [--epochs 2] [--trials-per-slot 8]

Quick mode: 2 trials per slot, 3 s epochs (not judged; the start-up figure is still shown).
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
        epochs: int = 2, slots: int = 0, per_slot: int = 0) -> list[dict]:
    """Run one sized sweep and return rows (see benchlib); keys ``tune_overhead_trials``
    (the goal), ``tune_overhead`` (whole command) and ``trial_startup``."""
    from camotune.trainer.synth import synth

    epoch_seconds = epoch_seconds or (3.0 if quick else 10.0)
    per_slot = per_slot or (2 if quick else 8)
    slots = slots or max(1, min(4, benchlib.cpus_available()))
    rate = train_rate()
    # one thread per trial and at most one trial per CPU: each trial trains at about `rate`
    n_train = max(16, math.ceil(epoch_seconds * rate))
    n_images = math.ceil(n_train / (1 - sweeplib.BASE_FIXED["val_fraction"]))
    n_trials = per_slot * slots
    command = (f"python benchmarks/bench_overhead.py --epoch-seconds {epoch_seconds:g} "
               f"--epochs {epochs} --trials-per-slot {per_slot}" + (" --quick" if quick else ""))
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
    return rows_of(sw, quick=quick, epochs=epochs, n_train=n_train, rate=rate, command=command)


def rows_of(sw: sweeplib.Sweep, *, quick: bool, epochs: int, n_train: int, rate: float,
            command: str) -> list[dict]:
    times = [float(m.get("epoch_time_s") or 0.0) for t in sw.trials.values()
             for m in t.curve.values()]
    epoch_s, shortest = sw.mean_epoch_s, min(times, default=math.nan)
    n_trials, slots = len(sw.trials), sw.slots
    sized = shortest >= 10 and n_trials >= 8 * slots  # the goals' conditions
    gaps = sw.slot_startups()
    startup = benchlib.median(gaps)
    loop, own = sw.slot_startup_parts()
    tag = (f"FIFO, {n_trials} trials ({n_trials / slots:.0f} per slot) x {epochs} epochs of "
           f"{epoch_s:.1f} s (shortest {shortest:.1f} s; {n_train} images at 64 px), "
           f"{slots} slots")
    why = "" if sized else " (not judged: needs >= 8 trials a slot and epochs >= 10 s)"
    return [
        benchlib.ratio_row(
            "tune_overhead_trials", f"Tune + MLflow useful / allocated over the trial phase: "
            f"sum of epoch_time_s / (slots x first trial start to last trial end) ({tag}; "
            f"trial phase {sw.trial_phase_s:.0f} s)", sw.useful_over_trial_phase,
            ">= 0.95" + why, benchlib.at_least(sw.useful_over_trial_phase, 0.95) if sized
            else None, command),
        benchlib.ratio_row(
            "tune_overhead", f"the same over the whole command: useful / (slots x wall time of "
            f"camotune sweep, Ray start-up and results included; wall {sw.wall_s:.0f} s)",
            sw.useful_over_allocated, "informational", None, command),
        benchlib.ratio_row(
            "trial_startup", f"median per-trial start-up on a slot: end of a trial to the first "
            f"batch of the next trial on the same slot (first batch = first epoch event less "
            f"its epoch_time_s; {len(gaps)} gaps, max {max(gaps, default=math.nan):.1f} s; "
            f"medians: end to the next start event {benchlib.median(loop):.1f} s, start event "
            f"to first batch {benchlib.median(own):.1f} s)",
            startup, "<= 1 s" + why, benchlib.at_most(startup, 1.0) if sized else None,
            command, unit="s"),
        benchlib.figure_row(f"training step rate used to size the epochs ({rate:.1f} images/s "
                            "at 1 thread)", rate, "images/s", command),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epoch-seconds", type=float, default=0.0,
                   help="target epoch length (default 10; 3 with --quick)")
    p.add_argument("--trials-per-slot", type=int, default=0,
                   help="trials per slot (default 8; 2 with --quick)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--slots", type=int, default=0, help="trials at once (default: CPUs, <= 4)")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    rows = run(a.quick, epoch_seconds=a.epoch_seconds, epochs=a.epochs, slots=a.slots,
               per_slot=a.trials_per_slot)
    benchlib.print_rows(rows)
    print(f"command: {rows[0]['command']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
