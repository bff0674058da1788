"""ASHA against FIFO on the same sampled configurations: real FIFO sweeps, ASHA replayed on
their curves with Ray's own rule, and one real ASHA sweep to check the replay.

For each of several searcher seeds S, ``N`` configurations are drawn with S (lr, batch size,
augmentation strength; see sweeplib.sample_points). One real FIFO sweep (``camotune sweep
--trial-scheduler fifo``) runs every drawn configuration of every seed to ``max_t`` epochs. The
configurations are the space file's ``points``, so the sweep runs exactly those trials.

The ASHA side is a **replay** (asha_replay.py): Ray's rule (continue iff the value is >= the
1/rf quantile of the values already recorded at the rung; the first at a rung continues) applied
to the recorded FIFO curves, in the order the trials reach each rung when the seed's N trials
run on the same slots with the start-up and epoch times they had in FIFO. Training is
deterministic on the CPU and every trial uses the same training seed, so a configuration's
curve under ASHA is its FIFO curve cut short; one real ASHA sweep (``--trial-scheduler asha``)
of the first ``check`` configurations of the first seed checks that (same-config row) and that
the replay predicts its decisions (replay-check row). Replaying instead of running 81 ASHA
trials is what makes 27 trials x 3 seeds affordable on 2 cores; it also makes other rung
metrics and grace periods free to compare.

All sweeps: the collapse stopper off, one CPU per trial, edgenext_xx_small from scratch on a
synthetic dataset at 32 px (64 images, a quarter held out for validation).

Per seed, then summed or compared over the seeds (default: rung metric = the epoch's
val_iou, grace G, rf 3):

- best IoU found (``best_val_iou`` within the epochs a trial ran): goal ASHA within 0.02 of
  FIFO in every seed; FIFO's best trial kept (not stopped) in every seed;
- compute: trial seconds (start event to end event, start-up included) of the replay over
  FIFO's, goal <= 0.40; trial-epochs and the ideal of synchronous successive halving beside it;
- Spearman rank correlation (FIFO trials) of the IoU at the first rung and the final score;
- the same with the rung metric = best value so far, and with other grace periods.

Also the FIFO sweep's Tune + MLflow overhead and its per-trial start-up on a slot (see
bench_overhead.py for the sized version with the goals).

Quick: 7 trials per seed, max_t 6, grace 2 (rungs 2, 6), 3 seeds, check sweep of 7.
Full: 27 trials per seed, max_t 18, grace 2 (rungs 2, 6, 18), 3 seeds, check sweep of 9.

    python benchmarks/bench_asha.py [--quick] [--seeds 0 1 2] [--trials N] [--max-t T]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import asha_replay
import benchlib
import sweeplib

IMAGES, SIZE, TRAIN_SEED, RF = 64, 32, 0, 3


def settings(quick: bool) -> dict[str, int]:
    if quick:
        return {"trials": 7, "max_t": 6, "grace": 2, "check": 7}
    return {"trials": 27, "max_t": 18, "grace": 2, "check": 9}


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


def curve_of(t: sweeplib.Trial) -> asha_replay.Curve:
    last = max(t.epoch_times)
    return asha_replay.Curve(sweeplib.params_key(t.params),
                             {e: t.iou_at(e) for e in t.curve}, t.offsets(),
                             max(0.0, t.ended - t.epoch_times[last]))


def seed_figures(trials: list[sweeplib.Trial], *, slots: int, grace: int, max_t: int,
                 metric: str) -> dict:
    """One seed's replay against its FIFO trials (in sampling order)."""
    curves = [curve_of(t) for t in trials]
    out = asha_replay.replay(curves, slots=slots, grace=grace, max_t=max_t, rf=RF,
                             metric=metric)
    by = {c.key: t for c, t in zip(curves, trials, strict=True)}
    ranked = sorted(by, key=lambda k: by[k].best, reverse=True)
    return {
        "fifo_best": by[ranked[0]].best, "asha_best": out.best(curves),
        "best_kept": ranked[0] not in out.stopped,
        "top3_killed": sum(k in out.stopped for k in ranked[:3]),
        "fifo_epochs": sum(t.epochs for t in trials),
        "asha_epochs": sum(out.stop_epoch.values()),
        "fifo_compute": sum(t.ended - t.started for t in trials),
        "asha_compute": sum(out.compute_s.values()),
        "firsts": [by[k].iou_at(grace) for k in ranked], "finals": [by[k].best for k in ranked],
    }


def summary(per_seed: list[dict]) -> dict:
    tot = {k: sum(p[k] for p in per_seed)
           for k in ("fifo_epochs", "asha_epochs", "fifo_compute", "asha_compute")}
    return {"gap": max(p["fifo_best"] - p["asha_best"] for p in per_seed),
            "kept": sum(p["best_kept"] for p in per_seed),
            "compute": tot["asha_compute"] / tot["fifo_compute"],
            "epochs": tot["asha_epochs"] / tot["fifo_epochs"], **tot,
            "killed": sum(p["top3_killed"] for p in per_seed)}


def cross_check(fifo_by: dict[tuple, sweeplib.Trial], asha: sweeplib.Sweep, points: list[dict],
                *, slots: int, grace: int, max_t: int) -> dict:
    """The real ASHA sweep against the replay of the same configurations."""
    keys = [sweeplib.params_key(p) for p in points]
    a_by = asha.by_params()
    if set(keys) != set(a_by):
        raise RuntimeError(f"{asha.name} ran other configurations than it was given")
    curves = [curve_of(fifo_by[k]) for k in keys]
    real = {k: a_by[k].end.get("stop_reason") == "asha_stopped" for k in keys}
    timed = asha_replay.replay(curves, slots=slots, grace=grace, max_t=max_t, rf=RF)
    arrivals = sorted((t.epoch_times[e], sweeplib.params_key(t.params), e)
                       for t in asha.trials.values() for e in t.epoch_times)
    ordered = asha_replay.replay_order(curves, [(k, e) for _, k, e in arrivals], grace=grace,
                                       max_t=max_t, rf=RF)
    diffs = [abs(a_by[k].iou_at(e) - fifo_by[k].iou_at(e)) for k in keys for e in a_by[k].curve]
    return {"n": len(keys), "real_stopped": sum(real.values()),
            "timed_mismatch": sum(real[k] != (k in timed.stopped) for k in keys),
            "order_mismatch": sum(real[k] != ordered[k] for k in keys),
            "same_config_max_diff": max(diffs, default=math.nan),
            "real_compute": asha.compute_s, "replay_compute": sum(timed.compute_s.values())}


def run(quick: bool = True, device: str = "cpu", *, seeds: tuple[int, ...] = (0, 1, 2),
        slots: int = 0, grace: int = 0, trials: int = 0, max_t: int = 0, check: int = -1
        ) -> list[dict]:
    """Run the FIFO sweep and the check sweep; return rows (see benchlib). ``device`` is where
    the trials would train; the benchmark trains on the CPU (one CPU per trial) whatever it
    says. ``check=0`` skips the real ASHA sweep."""
    from camotune.trainer.synth import synth

    s = settings(quick)
    for k, v in (("grace", grace), ("trials", trials), ("max_t", max_t)):
        if v:
            s[k] = v
    s["check"] = min(s["trials"], s["check"] if check < 0 else check)
    slots = slots or max(1, min(4, benchlib.cpus_available()))
    command = ("python benchmarks/bench_asha.py" + (" --quick" if quick else "")
               + " --seeds " + " ".join(map(str, seeds))
               + "".join(f" --{flag} {v}" for flag, v in (("grace-period", grace),
                         ("trials", trials), ("max-t", max_t)) if v)
               + (f" --check {check}" if check >= 0 else ""))
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

        def space(name: str, pts: list[dict]) -> Path:
            return sweeplib.write_space(tmp_path / f"{name}.yaml", epochs=s["max_t"],
                                        points=pts, fixed={"img_size": SIZE})

        fifo = sweeplib.run_sweep(name="fifo-all", space=space("fifo-all", everything),
                                  scheduler="fifo", num_samples=len(everything), **common)
        fifo_by = fifo.by_params()
        check_fig, sweeps = None, [fifo]
        if s["check"]:
            pts = points[seeds[0]][:s["check"]]
            asha = sweeplib.run_sweep(name=f"asha-s{seeds[0]}", space=space("asha-check", pts),
                                      scheduler="asha", num_samples=len(pts), **common)
            sweeps.append(asha)
            check_fig = cross_check(fifo_by, asha, pts, slots=slots, grace=s["grace"],
                                    max_t=s["max_t"])
    by_seed = {seed: [fifo_by[sweeplib.params_key(p)] for p in points[seed]] for seed in seeds}
    variants = {}
    for metric in ("last", "best"):
        for g in sorted({1, 2, 3, s["grace"]}):
            if g < s["max_t"]:
                variants[(metric, g)] = [seed_figures(by_seed[sd], slots=slots, grace=g,
                                                      max_t=s["max_t"], metric=metric)
                                         for sd in seeds]
    return rows_of(variants, check_fig, sweeps, s, seeds, slots, command)


def rows_of(variants: dict, check: dict | None, sweeps: list[sweeplib.Sweep], s: dict[str, int],
            seeds: tuple[int, ...], slots: int, command: str) -> list[dict]:
    per_seed = variants[("last", s["grace"])]
    main = summary(per_seed)
    per_seed_rho = [benchlib.spearman(p["firsts"], p["finals"]) for p in per_seed]
    finite = [r for r in per_seed_rho if not math.isnan(r)]
    tag = (f"replay of Ray's ASHA on real FIFO curves, {len(seeds)} seeds x {s['trials']} "
           f"trials, max_t {s['max_t']}, grace {s['grace']}, rf {RF}, rung metric = the "
           f"epoch's val_iou, {slots} slots, {SIZE} px")
    seeds_txt = "; ".join(f"s{sd}: FIFO {p['fifo_best']:.3f} ASHA {p['asha_best']:.3f}"
                          for sd, p in zip(seeds, per_seed, strict=True))
    n = len(seeds)
    rows = [
        benchlib.ratio_row("asha_best_gap", f"FIFO best IoU - ASHA best IoU, worst seed "
                           f"({tag}; {seeds_txt})", main["gap"], "<= 0.02 in every seed",
                           benchlib.at_most(main["gap"], 0.02), command, unit="IoU"),
        benchlib.ratio_row("asha_best_kept", "seeds in which ASHA kept FIFO's best trial "
                           "(per seed " + ", ".join("yes" if p["best_kept"] else "no"
                                                    for p in per_seed) + ")",
                           float(main["kept"]), f"{n} of {n}", main["kept"] == n, command,
                           unit="seeds"),
        benchlib.ratio_row("asha_compute", f"ASHA / FIFO compute-seconds, trial start to end "
                           f"({main['asha_compute']:.0f} / {main['fifo_compute']:.0f} s; "
                           f"trial-epochs {main['asha_epochs']}/{main['fifo_epochs']} = "
                           f"{main['epochs']:.2f}; ideal successive halving for this "
                           f"schedule {ideal_fraction(s['max_t'], s['grace'], RF):.2f})",
                           main["compute"], "<= 0.40", benchlib.at_most(main["compute"], 0.40),
                           command),
        benchlib.ratio_row("asha_top3_killed", "FIFO top-3 trials stopped by ASHA (per seed "
                           + ", ".join(str(p["top3_killed"]) for p in per_seed) + ")",
                           float(main["killed"]), "informational", None, command,
                           unit="trials"),
        benchlib.ratio_row("asha_rank_corr", f"Spearman(IoU at epoch {s['grace']}, final best "
                           f"IoU) over FIFO trials, mean of seeds "
                           f"({', '.join(f'{r:.2f}' for r in per_seed_rho)})",
                           sum(finite) / len(finite) if finite else math.nan,
                           "informational (high: the first rung predicts the end)", None,
                           command, unit="rho"),
    ]
    for (metric, g), figs in variants.items():
        if (metric, g) == ("last", s["grace"]):
            continue
        v = summary(figs)
        rows.append(benchlib.ratio_row(
            f"asha_variant_{metric}_g{g}", f"replayed ASHA, rung metric = "
            f"{'best val_iou so far' if metric == 'best' else 'the epoch val_iou'}, grace {g}: "
            f"compute / FIFO (gap {v['gap']:.3f}, FIFO best kept in {v['kept']}/{n} seeds, "
            f"trial-epochs {v['epochs']:.2f}, ideal {ideal_fraction(s['max_t'], g, RF):.2f})",
            v["compute"], "informational", None, command))
    if check is not None:
        rows += [
            benchlib.ratio_row(
                "asha_replay_check", f"real ASHA sweep (seed {seeds[0]}, {check['n']} trials, "
                f"{check['real_stopped']} stopped) vs the replay: trials decided differently "
                f"(replay in the real sweep's arrival order: {check['order_mismatch']}; real / "
                f"replayed compute {check['real_compute']:.0f} / "
                f"{check['replay_compute']:.0f} s)", float(check["timed_mismatch"]),
                "0 (1 may differ when two trials reach a rung at nearly the same time)",
                check["order_mismatch"] == 0 and check["timed_mismatch"] <= 1, command,
                unit="trials"),
            benchlib.ratio_row(
                "asha_same_config_check", "max |IoU(real ASHA trial) - IoU(FIFO trial)| at the "
                "epochs both ran, same configs", check["same_config_max_diff"],
                "0 (deterministic CPU training)", benchlib.at_most(
                    check["same_config_max_diff"], 1e-9), command, unit="IoU"),
        ]
    fifo = sweeps[0]
    ratio, epoch_s = fifo.useful_over_allocated, fifo.mean_epoch_s
    gaps = fifo.slot_startups()
    loop, own = fifo.slot_startup_parts()
    rows += [
        benchlib.ratio_row(
            "tune_overhead_short", f"Tune + MLflow useful/allocated seconds, the FIFO sweep "
            f"({len(fifo.trials)} trials x {s['max_t']} epochs of {epoch_s:.1f} s, {slots} "
            f"slots; over its trial phase {fifo.useful_over_trial_phase:.2f})", ratio,
            "informational (short sweep; the goal is tune_overhead_trials)", None, command),
        benchlib.ratio_row(
            "trial_startup_short", f"median per-trial start-up on a slot, the FIFO sweep "
            f"(end of a trial to the first batch of the next; {len(gaps)} gaps, max "
            f"{max(gaps, default=math.nan):.1f} s; end to next start event "
            f"{benchlib.median(loop):.1f} s, start event to first batch "
            f"{benchlib.median(own):.1f} s)", benchlib.median(gaps),
            "informational (the goal is trial_startup)", None, command, unit="s"),
    ]
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
    p.add_argument("--quick", action="store_true", help="7 trials, max_t 6 (default 27, 18)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--slots", type=int, default=0, help="trials at once (default: CPUs, <= 4)")
    p.add_argument("--grace-period", type=int, default=0,
                   help="ASHA's first rung (default 2, the sweep default)")
    p.add_argument("--trials", type=int, default=0, help="configurations per seed")
    p.add_argument("--max-t", type=int, default=0, help="epochs of a FIFO trial")
    p.add_argument("--check", type=int, default=-1,
                   help="trials of the real ASHA check sweep (0: none; default 7 quick, 9 full)")
    a = p.parse_args(argv)
    rows = run(a.quick, seeds=tuple(a.seeds), slots=a.slots, grace=a.grace_period,
               trials=a.trials, max_t=a.max_t, check=a.check)
    benchlib.print_rows(rows)
    print(f"command: {rows[0]['command']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
