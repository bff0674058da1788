"""The collapse stopper and the recording ASHA, driven directly (no Ray cluster needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ray.tune.schedulers import TrialScheduler

from camotune.search.asha import RecordingASHA
from camotune.search.collapse_stopper import CollapseStopper
from camotune.search.stop_registry import StopRegistry


def row(epoch: int, iou: float, fg: float = 0.1, gt: float = 0.12, loss: float = 1.0,
        steps: int | None = None) -> dict:
    """A result as the trainer reports it; ``steps``: optimizer steps so far (default 100 a
    epoch). The raw keys equal the objective's unless a test sets them apart."""
    return {"epoch": epoch, "val_iou": iou, "val_iou_raw": iou, "val_fg_ratio": fg,
            "val_fg_ratio_raw": fg, "gt_fg_ratio": gt, "train_loss": loss,
            "optimizer_steps": 100 * epoch if steps is None else steps}


def test_all_background_counts_from_min_steps_for_patience_steps() -> None:
    reg = StopRegistry("t")
    stop = CollapseStopper(reg, min_steps=300, patience_steps=100)
    # empty at steps 100-200 is a fresh decoder, not a collapse
    assert not stop("t", row(1, 0.0, fg=0.0))
    assert not stop("t", row(2, 0.0, fg=0.0))
    assert not stop("t", row(3, 0.0, fg=0.0))   # the streak starts at step 300
    assert stop("t", row(4, 0.0, fg=0.0))       # empty from step 300 to 400: 100 steps
    got = reg.get("t")
    assert got["stop_reason"] == "collapsed" and got["evidence"]["rule"] == "all_background"
    assert got["evidence"]["epoch"] == 4 and got["evidence"]["val_fg_ratio"] == 0.0
    assert got["evidence"]["optimizer_steps"] == 400 and got["evidence"]["steps_empty"] == 100


def test_a_slow_large_batch_starter_is_not_collapsed() -> None:
    """Effective batch 128 on ~3,600 images: 28 optimizer steps an epoch. Empty predictions at
    epochs 3 and 4 made the epoch-counting stopper (min_epoch 3, patience 2) call it collapsed
    at step 112; counted in steps (from step 1000, for 400 steps) it goes on, and starts to
    predict foreground at epoch 6."""
    old = CollapseStopper(StopRegistry("old"), patience=2, min_epoch=3)
    new = CollapseStopper(StopRegistry("new"))
    fired_old = fired_new = None
    for epoch in range(1, 9):
        r = row(epoch, 0.0 if epoch < 6 else 0.3, fg=0.0 if epoch < 6 else 0.1,
                steps=28 * epoch)
        if old("t", r) and fired_old is None:
            fired_old = epoch
        if new("t", r) and fired_new is None:
            fired_new = epoch
    assert fired_old == 4
    assert fired_new is None


def test_a_non_empty_evaluation_resets_the_streak() -> None:
    stop = CollapseStopper(StopRegistry("t"), min_steps=0, patience_steps=100)
    assert not stop("t", row(1, 0.0, fg=0.0))
    assert not stop("t", row(2, 0.1, fg=0.1))  # below min_best: the IoU-drop rule is idle
    assert not stop("t", row(3, 0.0, fg=0.0))
    assert stop("t", row(4, 0.0, fg=0.0))


def test_empty_ground_truth_is_not_a_collapse() -> None:
    stop = CollapseStopper(StopRegistry("t"), min_steps=0, patience_steps=0)
    assert not stop("t", row(5, 0.0, fg=0.0, gt=0.0))


def test_a_raw_collapse_is_seen_behind_a_near_initial_ema() -> None:
    """EMA 0.9999 barely moves from the initial weights, which predict 80% foreground: with
    objective best, val_fg_ratio is the EMA's 0.8; the raw weights predict nothing."""
    reg = StopRegistry("t")
    stop = CollapseStopper(reg, min_steps=0, patience_steps=100)
    fired = []
    for epoch in (1, 2, 3):
        r = dict(row(epoch, 0.15, fg=0.8), val_fg_ratio_raw=0.0, val_iou_raw=0.0)
        fired.append(stop("t", r))
    assert fired == [False, True, True]
    assert reg.get("t")["evidence"]["val_fg_ratio"] == 0.0


def test_old_records_without_raw_keys_fall_back_to_the_objective() -> None:
    stop = CollapseStopper(StopRegistry("t"), min_steps=0, patience_steps=100)
    old = [{"epoch": e, "val_iou": 0.0, "val_fg_ratio": 0.0, "gt_fg_ratio": 0.1,
            "train_loss": 1.0, "optimizer_steps": 100 * e} for e in (1, 2)]
    assert [stop("t", r) for r in old] == [False, True]


def test_a_single_iou_dip_does_not_fire_a_persistent_drop_does() -> None:
    reg = StopRegistry("t")
    stop = CollapseStopper(reg, min_best=0.2, drop=0.25, drop_evals=2)
    assert not stop("small", row(1, 0.15))
    assert not stop("small", row(2, 0.01))  # best 0.15 < 0.2: early noise, not a collapse
    assert not stop("small", row(3, 0.01))
    assert not stop("dip", row(1, 0.5))
    assert not stop("dip", row(2, 0.2))     # 0.2 >= 0.25 x 0.5
    assert not stop("dip", row(3, 0.11))    # 0.11 < 0.125, once
    assert not stop("dip", row(4, 0.45))    # back up: the streak ends
    assert not stop("dip", row(5, 0.1))     # a second, separate dip
    assert stop("dip", row(6, 0.05))        # two evaluations in a row below 0.125
    assert reg.get("dip")["evidence"] == {"rule": "iou_drop", "epoch": 6, "val_iou": 0.05,
                                          "best_val_iou": 0.5, "drop": 0.25,
                                          "evaluations_below": 2}


def test_the_iou_drop_reads_the_raw_weights() -> None:
    """EMA on with objective best: val_iou holds up (the EMA), the raw IoU has fallen."""
    stop = CollapseStopper(StopRegistry("t"), min_best=0.2, drop=0.25, drop_evals=2)
    assert not stop("t", row(1, 0.5))
    assert not stop("t", dict(row(2, 0.45), val_iou_raw=0.05))
    assert stop("t", dict(row(3, 0.45), val_iou_raw=0.04))


def test_replayed_epochs_are_not_counted_twice() -> None:
    """A resumed trial replays the epochs since its last checkpoint (--checkpoint-every)."""
    stop = CollapseStopper(StopRegistry("t"), min_best=0.2, drop=0.25, drop_evals=2)
    assert not stop("t", row(1, 0.5))
    assert not stop("t", row(2, 0.1))
    assert not stop("t", row(2, 0.1))  # the same epoch again: not a second evaluation
    assert stop("t", row(3, 0.1))


def test_non_finite_values_are_diverged() -> None:
    reg = StopRegistry("t")
    stop = CollapseStopper(reg)
    assert stop("t", row(2, 0.1, loss=math.nan))
    assert reg.get("t")["stop_reason"] == "diverged"


def test_first_decision_wins() -> None:
    reg = StopRegistry("first-decision")
    reg.mark("t", "asha_stopped", rung=2)
    reg.mark("t", "collapsed")
    assert reg.get("t")["stop_reason"] == "asha_stopped"


def test_state_is_rebuilt_from_trials_jsonl(tmp_path: Path) -> None:
    history = tmp_path / "trials.jsonl"
    lines = [{"event": "epoch", "trial_id": "t", "epoch": e, "metrics": row(e, 0.0, fg=0.0)}
             for e in (1, 2, 3)]
    history.write_text("".join(json.dumps(x) + "\n" for x in lines))
    stop = CollapseStopper(StopRegistry("t"), min_steps=300, patience_steps=100,
                           history=history)
    assert stop("t", row(4, 0.0, fg=0.0))  # epoch 3 from before the resume counts


class Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def test_asha_records_rung_stops_but_not_completion(tmp_path: Path) -> None:
    reg = StopRegistry("t")
    asha = RecordingASHA(reg, max_t=6, grace_period=2, reduction_factor=3)
    assert asha.rungs == [2, 6]
    trials = [Trial(f"t{i}") for i in range(4)]
    for t in trials:
        asha.on_trial_add(None, t)
    for t, iou in zip(trials, (0.5, 0.6, 0.7, 0.1), strict=True):
        asha.on_trial_result(None, t, {"epoch": 1, "val_iou": iou})
    decisions = [asha.on_trial_result(None, t, {"epoch": 2, "val_iou": iou})
                 for t, iou in zip(trials, (0.5, 0.6, 0.7, 0.1), strict=True)]
    assert decisions[-1] == TrialScheduler.STOP
    stopped = reg.get("t3")
    assert stopped["stop_reason"] == "asha_stopped" and stopped["rung"] == 2
    assert stopped["evidence"]["val_iou"] == 0.1 and stopped["evidence"]["rung_cutoff"] > 0.1
    # reaching max_t is completion: ASHA says STOP, but it is not recorded as a stop
    assert asha.on_trial_result(None, trials[2], {"epoch": 6, "val_iou": 0.8}) == \
        TrialScheduler.STOP
    assert reg.get("t2") is None


def test_asha_rungs_are_replayed_after_a_resume(tmp_path: Path) -> None:
    history = tmp_path / "trials.jsonl"
    earlier = [{"event": "epoch", "trial_id": f"old{i}", "epoch": 2,
                "metrics": {"epoch": 2, "val_iou": v}} for i, v in enumerate((0.6, 0.7, 0.8))]
    history.write_text("".join(json.dumps(x) + "\n" for x in earlier))
    reg = StopRegistry("t")
    asha = RecordingASHA(reg, max_t=6, grace_period=2, reduction_factor=3, history=history)
    new = Trial("new")
    asha.on_trial_add(None, new)
    # Without the replayed rung the first trial at the rung always continues.
    assert asha.on_trial_result(None, new, {"epoch": 2, "val_iou": 0.2}) == TrialScheduler.STOP
    assert reg.get("new")["rung"] == 2


def test_unpickled_registry_is_the_process_registry() -> None:
    import pickle

    reg = StopRegistry("/sweeps/shared")
    stopper = CollapseStopper(reg)
    asha = RecordingASHA(reg, max_t=6, grace_period=2, reduction_factor=3)
    stopper2, asha2 = pickle.loads(pickle.dumps(stopper)), pickle.loads(pickle.dumps(asha))
    assert stopper2.registry is reg and asha2.registry is reg


def test_asha_rungs_are_explicit_milestones() -> None:
    """Rungs at 4, 12 and 32 of 40 epochs (not a geometric series): Ray's rule at each."""
    reg = StopRegistry("milestones")
    asha = RecordingASHA(reg, max_t=40, milestones=[4, 12, 32], reduction_factor=3)
    assert asha.rungs == [4, 12, 32]
    from camotune.search import compat

    assert sorted(m for _, m, _ in compat.asha_rungs(asha)) == [4, 12, 32]
    trials = [Trial(f"m{i}") for i in range(3)]
    for t in trials:
        asha.on_trial_add(None, t)
    # epoch 2 is no rung any more (the geometric 2, 6, 18 would have judged it)
    assert all(asha.on_trial_result(None, t, {"epoch": 2, "val_iou": v}) ==
               TrialScheduler.CONTINUE for t, v in zip(trials, (0.9, 0.5, 0.1), strict=True))
    got = [asha.on_trial_result(None, t, {"epoch": 4, "val_iou": v})
           for t, v in zip(trials, (0.9, 0.5, 0.1), strict=True)]
    assert got == [TrialScheduler.CONTINUE, TrialScheduler.STOP, TrialScheduler.STOP]
    assert reg.get("m2")["rung"] == 4


def test_asha_best_rung_metric_forgives_one_dip() -> None:
    """With rung_metric best a trial is judged on its best val_iou so far (best_val_iou)."""
    for metric, expected in (("last", TrialScheduler.STOP), ("best", TrialScheduler.CONTINUE)):
        reg = StopRegistry(f"rm-{metric}")
        asha = RecordingASHA(reg, max_t=6, milestones=[2, 6], reduction_factor=2,
                             rung_metric=metric)
        a, b = Trial("a"), Trial("b")
        asha.on_trial_add(None, a)
        asha.on_trial_add(None, b)
        asha.on_trial_result(None, a, {"epoch": 2, "val_iou": 0.5, "best_val_iou": 0.5})
        # b was at 0.6 in epoch 1 and dips to 0.3 at the rung
        got = asha.on_trial_result(None, b, {"epoch": 2, "val_iou": 0.3, "best_val_iou": 0.6})
        assert got == expected, metric
        if metric == "last":
            assert reg.get("b")["evidence"]["val_iou"] == 0.3


def test_asha_brackets_start_at_later_rungs() -> None:
    asha = RecordingASHA(StopRegistry("br"), max_t=27, milestones=[1, 3, 9], brackets=3)
    from camotune.search import compat

    per = {}
    for bracket, m, _ in compat.asha_rungs(asha):
        per.setdefault(id(bracket), []).append(m)
    assert sorted(sorted(v) for v in per.values()) == [[1, 3, 9], [3, 9], [9]]
