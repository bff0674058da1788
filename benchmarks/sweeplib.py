"""Running real `camotune sweep` commands for the benchmarks and reading their trials.jsonl.

A benchmark writes its own space file (YAML) into a temporary folder, with ``points`` listing
the exact configurations to run, so two sweeps (e.g. ASHA and FIFO) run the same trials
whatever the searcher does. The sweep runs as a subprocess (``python -m camotune sweep``): its
wall time is everything a user waits for, Ray's start-up and the final results included.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What every benchmark trial trains: the smallest backbone from scratch (64 px unless a
# benchmark says otherwise), the whole model from the first epoch, no accumulation (enough
# optimizer steps per epoch to learn on a few dozen images), loading in the trial's process,
# the slow COD metrics only at the end.
BASE_FIXED: dict[str, Any] = {
    "img_size": 64, "backbone": "edgenext_xx_small", "pretrained": False, "stage1_epochs": 0,
    "accumulation_steps": 1, "num_workers": 0, "val_fraction": 0.25, "use_ema": False,
}


def sample_points(seed: int, n: int) -> list[dict[str, Any]]:
    """``n`` configurations drawn from the benchmark space with ``seed``: lr log-uniform in
    [3e-4, 1e-2] (4 significant digits, so the YAML round trip is exact), batch size 4 or 8,
    augmentation strength uniform in [0, 1.5]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    points = []
    for _ in range(n):
        lr = math.exp(rng.uniform(math.log(3e-4), math.log(1e-2)))
        points.append({"lr": float(f"{lr:.4g}"), "batch_size": int(rng.choice([4, 8])),
                       "aug_strength": round(float(rng.uniform(0.0, 1.5)), 3)})
    return points


def write_space(path: Path, *, epochs: int, points: list[dict[str, Any]],
                fixed: dict[str, Any] | None = None) -> Path:
    """A space file whose params cover ``points`` and whose trials are exactly ``points``."""
    import yaml

    space = {
        "description": "benchmark space written by benchmarks/sweeplib.py",
        "params": {
            "lr": {"type": "loguniform", "low": 1.0e-4, "high": 3.0e-2},
            "batch_size": {"type": "choice", "values": [4, 8, 16]},
            "aug_strength": {"type": "uniform", "low": 0.0, "high": 2.0},
        },
        "fixed": {**BASE_FIXED, "epochs": epochs, "full_metrics_every": epochs, **(fixed or {})},
        "points": points,
    }
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def params_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


@dataclass
class Trial:
    trial_id: str
    params: dict[str, Any]
    curve: dict[int, dict[str, Any]] = field(default_factory=dict)  # epoch -> metrics
    end: dict[str, Any] = field(default_factory=dict)
    started: float = math.nan  # Unix time of the start event (the driver's clock)
    epoch_times: dict[int, float] = field(default_factory=dict)  # epoch -> its event's time

    @property
    def ended(self) -> float:
        """Unix time of the end event (NaN while it has none)."""
        return float(self.end["time"]) if "time" in self.end else math.nan

    @property
    def first_batch(self) -> float:
        """When its first batch started, estimated without help from the trial: the first
        epoch's event time less that epoch's ``epoch_time_s`` (training + validation). The
        event is written when the driver receives the result, so this is at or after the real
        first batch (the report's latency and the epoch's checkpoint count as start-up)."""
        if not self.curve:
            return math.nan
        first = min(self.curve)
        return self.epoch_times.get(first, math.nan) - float(
            self.curve[first].get("epoch_time_s") or 0.0)

    def offsets(self) -> dict[int, float]:
        """Seconds from its start event to each epoch's event."""
        return {e: t - self.started for e, t in sorted(self.epoch_times.items())}

    @property
    def epochs(self) -> int:
        return int(self.end.get("epochs") or len(self.curve))

    @property
    def best(self) -> float:
        value = self.end.get("best_val_iou")
        return float(value) if value is not None else math.nan

    def iou_at(self, epoch: int) -> float:
        value = self.curve.get(epoch, {}).get("val_iou")
        return float(value) if value is not None else math.nan

    @property
    def useful_seconds(self) -> float:
        """Training + validation seconds of its epochs (``epoch_time_s``)."""
        return sum(float(m.get("epoch_time_s") or 0.0) for m in self.curve.values())


@dataclass
class Sweep:
    name: str
    folder: Path
    wall_s: float
    slots: int
    trials: dict[str, Trial]

    def by_params(self) -> dict[tuple, Trial]:
        return {params_key(t.params): t for t in self.trials.values()}

    @property
    def trial_epochs(self) -> int:
        return sum(t.epochs for t in self.trials.values())

    @property
    def compute_s(self) -> float:
        """Sum of the trials' ``gpu_seconds`` (CPUs x wall seconds without a GPU)."""
        return sum(float(t.end.get("gpu_seconds") or 0.0) for t in self.trials.values())

    @property
    def useful_s(self) -> float:
        return sum(t.useful_seconds for t in self.trials.values())

    @property
    def useful_over_allocated(self) -> float:
        """Useful training seconds / (trial slots x the sweep's wall time)."""
        return self.useful_s / (self.slots * self.wall_s)

    @property
    def trial_phase_s(self) -> float:
        """Seconds from the first trial's start to the last trial's end (driver events): the
        sweep's wall time less Ray's start-up and the final results."""
        starts = [t.started for t in self.trials.values()]
        ends = [t.ended for t in self.trials.values() if "time" in t.end]
        return max(ends) - min(starts) if starts and ends else math.nan

    def slot_successions(self) -> list[tuple[float, Trial]]:
        """(end time of the trial a slot held before, the trial that took the slot over), for
        every trial that did not start on an empty slot. Slots are rebuilt from the driver's
        events: each trial, in start order, takes the slot freed last before its start (the
        first ``slots`` trials start on empty slots)."""
        free: list[float] = []        # end times of slots whose trial has ended
        running: list[Trial] = []
        out: list[tuple[float, Trial]] = []
        for t in sorted(self.trials.values(), key=lambda t: t.started):
            for r in [r for r in running if r.ended <= t.started]:
                running.remove(r)
                free.append(r.ended)
            if free:
                prev = max(free)
                free.remove(prev)
                out.append((prev, t))
            elif len(running) >= self.slots:  # started before the driver logged an end
                r = min(running, key=lambda r: r.ended)
                running.remove(r)
                out.append((r.ended, t))
            running.append(t)
        return out

    def slot_startups(self) -> list[float]:
        """Per-trial start-up on a slot: seconds from the end of one trial to the first batch
        of the next trial that took its slot (see `Trial.first_batch`)."""
        gaps = [t.first_batch - prev for prev, t in self.slot_successions()]
        return [g for g in gaps if not math.isnan(g)]

    def slot_startup_parts(self) -> tuple[list[float], list[float]]:
        """The start-up split at the next trial's start event: (end -> start event: the Tune
        loop between trials; start event -> first batch: the trial's own start-up)."""
        pairs = [(t.started - prev, t.first_batch - t.started)
                 for prev, t in self.slot_successions() if not math.isnan(t.first_batch)]
        return [a for a, _ in pairs], [b for _, b in pairs]

    @property
    def useful_over_trial_phase(self) -> float:
        """Useful seconds / (slots x the trial phase): the per-trial overhead alone."""
        return self.useful_s / (self.slots * self.trial_phase_s)

    @property
    def mean_epoch_s(self) -> float:
        times = [float(m.get("epoch_time_s") or 0.0) for t in self.trials.values()
                 for m in t.curve.values()]
        return sum(times) / len(times) if times else math.nan


def read_trials(folder: Path) -> dict[str, Trial]:
    from camotune.sweepdir.events import read_events

    trials: dict[str, Trial] = {}
    for ev in read_events(folder / "trials.jsonl"):
        tid = ev.get("trial_id")
        if ev.get("event") == "start":
            trials.setdefault(tid, Trial(tid, dict(ev.get("params") or {}),
                                         started=float(ev["time"])))
        elif ev.get("event") == "epoch" and tid in trials:
            trials[tid].curve[int(ev["epoch"])] = ev.get("metrics") or {}
            trials[tid].epoch_times[int(ev["epoch"])] = float(ev["time"])
        elif ev.get("event") == "end" and tid in trials:
            trials[tid].end = ev
    return trials


def run_sweep(*, name: str, space: Path, dataset: Path, storage: Path, cache: Path,
              scheduler: str, num_samples: int, seed: int, slots: int, grace_period: int = 1,
              reduction_factor: int = 3, timeout_s: float = 3600) -> Sweep:
    """Run ``camotune sweep`` to its end; raises RuntimeError (with the log's tail) when it
    fails, or when a trial ended other than completed / asha_stopped."""
    argv = [sys.executable, "-m", "camotune", "sweep", "--space", str(space),
            "--dataset-path", str(dataset), "--storage-path", str(storage), "--name", name,
            "--num-samples", str(num_samples), "--trial-scheduler", scheduler,
            "--searcher", "random", "--seed", str(seed), "--no-collapse-stopper",
            "--grace-period", str(grace_period), "--reduction-factor", str(reduction_factor),
            "--cpus-per-trial", "1", "--max-concurrent", str(slots), "--threads", "1",
            "--cache-dir", str(cache)]
    # MLflow's telemetry thread sets and unsets an environment variable while the sweep runs,
    # which can break code iterating os.environ (seen: tracking/secrets.py KeyError);
    # benchmark machines are offline anyway, so it is off here.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "RAY_DEDUP_LOGS": "0",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    log_path = storage / f"{name}.log"
    storage.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                              timeout=timeout_s, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-15:])
        raise RuntimeError(f"camotune sweep {name} exited {proc.returncode}:\n{tail}")
    trials = read_trials(storage / name)
    bad = {t.trial_id: t.end.get("stop_reason") for t in trials.values()
           if t.end.get("stop_reason") not in ("completed", "asha_stopped")}
    if bad or len(trials) != num_samples:
        raise RuntimeError(f"sweep {name}: {len(trials)}/{num_samples} trials, "
                           f"unexpected endings {bad} (log: {log_path})")
    return Sweep(name, storage / name, wall, slots, trials)
