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


# -- the ASHA replay and the slot start-up, on data with a known answer ------------------------

sys.path.insert(0, str(REPO / "benchmarks"))
import asha_replay  # noqa: E402
import sweeplib  # noqa: E402


def _curve(name: str, values: list[float], epoch_s: float = 1.0, startup: float = 0.0
           ) -> asha_replay.Curve:
    return asha_replay.Curve((name,), {e: v for e, v in enumerate(values, 1)},
                             {e: startup + e * epoch_s for e in range(1, len(values) + 1)})


def test_milestones_are_rays() -> None:
    assert asha_replay.milestones(2, 3, 18) == [2, 6, 18]
    assert asha_replay.milestones(1, 3, 9) == [1, 3, 9]
    assert asha_replay.milestones(2, 3, 6) == [2, 6]


def test_judge_uses_the_quantile_of_values_already_recorded() -> None:
    rungs: dict[int, dict] = {1: {}}
    assert asha_replay.judge(rungs, ("a",), 1, 0.5, 3)       # first at the rung
    assert asha_replay.judge(rungs, ("b",), 1, 0.9, 3)       # >= 0.5
    # cutoff = 66.7th percentile of [0.5, 0.9] = 0.767
    assert not asha_replay.judge(rungs, ("c",), 1, 0.7, 3)
    assert asha_replay.judge(rungs, ("d",), 1, 0.8, 3)
    assert asha_replay.judge(rungs, ("e",), 2, 0.0, 3)       # not a rung


def test_replay_one_slot_stops_the_laggard_and_counts_its_compute() -> None:
    curves = [_curve("a", [0.5, 0.6, 0.7]), _curve("b", [0.9, 0.9, 0.9]),
              _curve("c", [0.1, 0.95, 0.99], startup=2.0)]
    out = asha_replay.replay(curves, slots=1, grace=1, max_t=3)
    assert out.stop_epoch == {("a",): 3, ("b",): 3, ("c",): 1}
    assert out.stopped == {("c",)}
    assert out.compute_s[("c",)] == 3.0  # start-up 2 s + one 1 s epoch
    assert out.best(curves) == 0.9       # c's 0.99 was never reached
    # the best-so-far metric judges the same way when nothing dips
    assert asha_replay.replay(curves, slots=1, grace=1, max_t=3, metric="best").stopped == {("c",)}


def test_replay_arrival_order_follows_the_slots() -> None:
    # two slots: a (slow: 10 s epochs) and b start together; b reaches rung 1 at t=1 and ends
    # at t=3; c takes its slot and reaches rung 1 at t=4, before a (t=10): c is compared with
    # b alone and stopped, a with b and c (cutoff 0.533) and stopped
    curves = [_curve("a", [0.2, 0.2, 0.2], epoch_s=10.0), _curve("b", [0.6, 0.6, 0.6]),
              _curve("c", [0.4, 0.9, 0.9])]
    out = asha_replay.replay(curves, slots=2, grace=1, max_t=3)
    assert out.stopped == {("a",), ("c",)}
    assert out.compute_s[("c",)] == 1.0 and out.compute_s[("a",)] == 10.0
    # in the order a, b, c: a is first at the rung and continues, b clears 0.2, c (0.4) is
    # below the cutoff of [0.2, 0.6] (0.467) and stopped
    first_a = asha_replay.replay_order(curves, [(("a",), 1), (("b",), 1), (("c",), 1)],
                                       grace=1, max_t=3)
    assert first_a == {("a",): False, ("b",): False, ("c",): True}
    order = asha_replay.replay_order(curves, [(("b",), 1), (("c",), 1), (("a",), 1)], grace=1,
                                     max_t=3)
    assert order == {("b",): False, ("c",): True, ("a",): True}


def test_replay_best_so_far_keeps_a_trial_that_dips_at_the_rung() -> None:
    curves = [_curve("a", [0.5, 0.5, 0.5, 0.5]), _curve("b", [0.8, 0.3, 0.8, 0.8])]
    last = asha_replay.replay(curves, slots=1, grace=2, max_t=4, rf=2)
    best = asha_replay.replay(curves, slots=1, grace=2, max_t=4, rf=2, metric="best")
    assert ("b",) in last.stopped and ("b",) not in best.stopped


def test_slot_startups_measure_end_to_first_batch() -> None:
    def trial(tid: str, start: float, first_epoch_event: float, epoch_s: float, end: float
              ) -> sweeplib.Trial:
        t = sweeplib.Trial(tid, {}, curve={1: {"epoch_time_s": epoch_s}},
                           end={"time": end}, started=start,
                           epoch_times={1: first_epoch_event})
        return t

    trials = {"a": trial("a", 0.0, 5.0, 4.0, 5.5), "b": trial("b", 0.0, 6.0, 4.0, 6.2),
              "c": trial("c", 5.6, 9.0, 2.5, 9.1),   # a's slot: first batch 6.5, gap 1.0
              "d": trial("d", 6.3, 9.7, 3.0, 9.8)}   # b's slot: first batch 6.7, gap 0.5
    sw = sweeplib.Sweep("s", Path("."), 10.0, 2, trials)
    assert sorted(round(g, 6) for g in sw.slot_startups()) == [0.5, 1.0]
    loop, own = sw.slot_startup_parts()
    assert sorted(round(x, 6) for x in loop) == [0.1, 0.1]   # c: 5.5 -> 5.6, d: 6.2 -> 6.3
    assert sorted(round(x, 6) for x in own) == [0.4, 0.9]
