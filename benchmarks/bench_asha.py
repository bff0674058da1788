"""ASHA against FIFO on the same sampled configurations, with real `camotune sweep` runs.

For each of several searcher seeds S, ``N`` configurations are drawn with S (lr, batch size,
augmentation strength; see sweeplib.sample_points). One FIFO sweep (``--trial-scheduler fifo``)
runs every drawn configuration of every seed to ``max_t`` epochs; then, per seed, an ASHA sweep
(``--trial-scheduler asha``, grace period G, reduction factor 3) runs that seed's N. The
configurations are the space file's ``points``, so the sweeps run exactly those trials
(checked from their trials.jsonl). Training is deterministic on the CPU and every trial uses
the same training seed, so a trial's curve does not depend on which sweep ran it (checked:
the same-config row), and one FIFO sweep serves all seeds, which saves its fixed cost twice.
All sweeps: the collapse stopper off, one CPU per trial, edgenext_xx_small from scratch on a
synthetic dataset at 32 px (64 images, a quarter held out for validation).

Per seed, then summed or compared over the seeds:

- trial-epochs and compute-seconds (``gpu_seconds``: CPUs x the trial's wall seconds, its
  start-up included) used; the name also gives the ideal fraction of synchronous successive
  halving for the schedule (max_t 6 with one rung cannot go below 0.56);
- best ``best_val_iou`` found; goal: ASHA's within 0.02 of FIFO's (the worst seed counts);
- Spearman rank correlation, over the FIFO trials, between the IoU at the first rung (epoch
  G) and the trial's final score (``best_val_iou``): how well the first rung predicts the end;
- how many of FIFO's top 3 trials ASHA stopped (goal 0);
- the same-config check: the ASHA trial's IoU at each epoch it ran vs the FIFO trial's.

Also: Tune + MLflow overhead of the FIFO sweep = useful seconds (sum of the trials' epoch
``epoch_time_s``, training + validation) / allocated seconds (trial slots x the sweep's wall
time, from the command's start to its exit: Ray start-up, MLflow and the results included).

Quick: 5 trials per seed, max_t 6, grace 2 (one rung, at epoch 2), 3 seeds.
Full: 9 trials per seed, max_t 18, grace 2 (rungs at 2 and 6), 3 seeds.

    python benchmarks/bench_asha.py [--quick] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import benchlib
import sweeplib

IMAGES, SIZE, TRAIN_SEED = 64, 32, 0


def settings(quick: bool) -> dict[str, int]:
    if quick:
        return {"trials": 5, "max_t": 6, "grace": 2}
    return {"trials": 9, "max_t": 18, "grace": 2}


def ideal_fraction(max_t: int, grace: int, rf: int) -> float:
    """Trial-epochs of synchronous successive halving over running every trial to max_t
    (1/rf of the trials continue at each rung)."""
    bounds, r = [], grace
    while r < max_t:
        bounds.append(r)
        r *= rf
    epochs, alive, prev = 0.0, 1.0, 0
    for b in [*bounds, max_t]:
        epochs += alive * (b - prev)
        prev, alive = b, alive / rf
    return epochs / max_t


def compare(fifo: dict[tuple, sweeplib.Trial], asha: sweeplib.Sweep, grace: int
            ) -> dict[str, float]:
    """Figures of one seed: ``fifo`` holds the FIFO trials of the seed's configurations."""
    a_by = asha.by_params()
    if set(fifo) != set(a_by):
        raise RuntimeError(f"{asha.name} ran other configurations than the FIFO sweep")
    ranked = sorted(fifo, key=lambda k: fifo[k].best, reverse=True)
    top3_killed = sum(a_by[k].end.get("stop_reason") == "asha_stopped" for k in ranked[:3])
    diffs = [abs(a_by[k].iou_at(e) - fifo[k].iou_at(e)) for k in fifo for e in a_by[k].curve]
    firsts = [fifo[k].iou_at(grace) for k in ranked]
    finals = [fifo[k].best for k in ranked]
    return {
        "fifo_best": max(finals), "asha_best": max(t.best for t in asha.trials.values()),
        "fifo_epochs": sum(t.epochs for t in fifo.values()), "asha_epochs": asha.trial_epochs,
        "fifo_compute": sum(float(t.end.get("gpu_seconds") or 0.0) for t in fifo.values()),
        "asha_compute": asha.compute_s,
        "spearman": benchlib.spearman(firsts, finals), "top3_killed": top3_killed,
        "same_config_max_diff": max(diffs, default=math.nan),
        "firsts": firsts, "finals": finals,
    }


def run(quick: bool = True, device: str = "cpu", *, seeds: tuple[int, ...] = (0, 1, 2),
        slots: int = 0, grace: int = 0) -> list[dict]:
    """Run 1 + len(seeds) sweeps and return rows (see benchlib). ``device`` is where the
    trials would train; the benchmark trains on the CPU (one CPU per trial) whatever it says."""
    from camotune.trainer.synth import synth

    s = settings(quick)
    if grace:
        s["grace"] = grace
    slots = slots or max(1, min(4, benchlib.cpus_available()))
    command = ("python benchmarks/bench_asha.py" + (" --quick" if quick else "")
               + " --seeds " + " ".join(map(str, seeds))
               + (f" --grace-period {grace}" if grace else ""))
    points = {seed: sweeplib.sample_points(seed, s["trials"]) for seed in seeds}
    everything = [p for seed in seeds for p in points[seed]]
    if len({sweeplib.params_key(p) for p in everything}) != len(everything):
        raise RuntimeError("two seeds drew the same configuration: choose other seeds")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = synth(tmp_path / "data", n_train=IMAGES, n_test=0, size=SIZE, difficulty=0.1,
                     noncam=0)
        common = dict(dataset=data, storage=tmp_path / "runs", cache=tmp_path / "cache",
                      seed=TRAIN_SEED, slots=slots, grace_period=s["grace"])
        fixed = {"img_size": SIZE}

        def space(name: str, pts: list[dict]) -> Path:
            return sweeplib.write_space(tmp_path / f"{name}.yaml", epochs=s["max_t"],
                                        points=pts, fixed=fixed)

        fifo = sweeplib.run_sweep(name="fifo-all", space=space("fifo-all", everything),
                                  scheduler="fifo", num_samples=len(everything), **common)
        fifo_by = fifo.by_params()
        per_seed, sweeps = [], [fifo]
        for seed in seeds:
            asha = sweeplib.run_sweep(name=f"asha-s{seed}", space=space(f"asha-s{seed}",
                                                                        points[seed]),
                                      scheduler="asha", num_samples=s["trials"], **common)
            sweeps.append(asha)
            mine = {sweeplib.params_key(p): fifo_by[sweeplib.params_key(p)]
                    for p in points[seed]}
            per_seed.append(compare(mine, asha, s["grace"]))
    return rows_of(per_seed, sweeps, s, seeds, slots, command)


def rows_of(per_seed: list[dict], sweeps: list[sweeplib.Sweep], s: dict[str, int],
            seeds: tuple[int, ...], slots: int, command: str) -> list[dict]:
    tot = {k: sum(p[k] for p in per_seed)
           for k in ("fifo_epochs", "asha_epochs", "fifo_compute", "asha_compute")}
    gap = max(p["fifo_best"] - p["asha_best"] for p in per_seed)
    compute = tot["asha_compute"] / tot["fifo_compute"]
    epochs = tot["asha_epochs"] / tot["fifo_epochs"]
    killed = sum(p["top3_killed"] for p in per_seed)
    per_seed_rho = [p["spearman"] for p in per_seed]
    finite = [r for r in per_seed_rho if not math.isnan(r)]
    pooled = benchlib.spearman([v for p in per_seed for v in p["firsts"]],
                               [v for p in per_seed for v in p["finals"]])
    tag = (f"{len(seeds)} seeds x {s['trials']} trials, max_t {s['max_t']}, grace "
           f"{s['grace']}, rf 3, {slots} slots, {SIZE} px")
    seeds_txt = "; ".join(f"s{sd}: FIFO {p['fifo_best']:.3f} ASHA {p['asha_best']:.3f}"
                          for sd, p in zip(seeds, per_seed, strict=True))
    rows = [
        benchlib.ratio_row("asha_best_gap", f"FIFO best IoU - ASHA best IoU, worst seed "
                           f"({tag}; {seeds_txt})", gap, "<= 0.02",
                           benchlib.at_most(gap, 0.02), command, unit="IoU"),
        benchlib.ratio_row("asha_compute", f"ASHA / FIFO compute-seconds (trial-epochs "
                           f"{tot['asha_epochs']}/{tot['fifo_epochs']} = {epochs:.2f}; ideal "
                           f"successive halving for this schedule "
                           f"{ideal_fraction(s['max_t'], s['grace'], 3):.2f})", compute,
                           "<= 0.30", benchlib.at_most(compute, 0.30), command),
        benchlib.ratio_row("asha_top3_killed", "FIFO top-3 trials stopped by ASHA (all seeds: "
                           + ", ".join(str(p["top3_killed"]) for p in per_seed) + ")",
                           float(killed), "0", killed == 0, command, unit="trials"),
        benchlib.ratio_row("asha_rank_corr", f"Spearman(first-rung IoU, final best IoU) over "
                           f"FIFO trials, mean of seeds ({', '.join(f'{r:.2f}' for r in per_seed_rho)}"
                           f"; pooled {pooled:.2f})",
                           sum(finite) / len(finite) if finite else math.nan,
                           "informational (high: the first rung predicts the end)", None,
                           command, unit="rho"),
        benchlib.ratio_row("asha_same_config_check", "max |IoU(ASHA trial) - IoU(FIFO trial)| "
                           "at the epochs both ran, same configs",
                           max(p["same_config_max_diff"] for p in per_seed), "0 (deterministic "
                           "CPU training)", None, command, unit="IoU"),
    ]
    fifo = sweeps[0]
    ratio, epoch_s = fifo.useful_over_allocated, fifo.mean_epoch_s
    rows.append(benchlib.ratio_row(
        "tune_overhead_short", f"Tune + MLflow useful/allocated seconds, the FIFO sweep "
        f"({len(fifo.trials)} trials x {s['max_t']} epochs of {epoch_s:.1f} s, {slots} slots; "
        f"over its trial phase alone {fifo.useful_over_trial_phase:.2f})", ratio,
        ">= 0.95 once epochs take >= 10 s (these are shorter)",
        benchlib.at_least(ratio, 0.95) if epoch_s >= 10 else None, command))
    for sw in sweeps:
        rows.append(benchlib.figure_row(
            f"sweep {sw.name}: wall {sw.wall_s:.0f} s (trials {sw.trial_phase_s:.0f} s), "
            f"trial-epochs {sw.trial_epochs}, compute {sw.compute_s:.0f} s, useful "
            f"{sw.useful_s:.0f} s (useful / slots x trial phase "
            f"{sw.useful_over_trial_phase:.2f}), best IoU "
            f"{max(t.best for t in sw.trials.values()):.3f}", sw.useful_over_allocated,
            "useful/alloc", command, "informational"))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="5 trials, max_t 6 (default 9, 18)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--slots", type=int, default=0, help="trials at once (default: CPUs, <= 4)")
    p.add_argument("--grace-period", type=int, default=0,
                   help="ASHA's first rung (default 2, the sweep default)")
    a = p.parse_args(argv)
    rows = run(a.quick, seeds=tuple(a.seeds), slots=a.slots, grace=a.grace_period)
    benchlib.print_rows(rows)
    print(f"command: {rows[0]['command']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
