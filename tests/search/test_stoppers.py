"""The collapse stopper and the recording ASHA, driven directly (no Ray cluster needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ray.tune.schedulers import TrialScheduler

from camotune.search.asha import RecordingASHA
from camotune.search.collapse_stopper import CollapseStopper
from camotune.search.stop_registry import StopRegistry


def row(epoch: int, iou: float, fg: float = 0.1, gt: float = 0.12, loss: float = 1.0) -> dict:
    return {"epoch": epoch, "val_iou": iou, "val_fg_ratio": fg, "gt_fg_ratio": gt,
            "train_loss": loss}


def test_all_background_after_min_epoch_is_collapsed() -> None:
    reg = StopRegistry("t")
    stop = CollapseStopper(reg, patience=2, min_epoch=3)
    # empty at epochs 1-2 is a fresh decoder, not a collapse
    assert not stop("t", row(1, 0.0, fg=0.0))
    assert not stop("t", row(2, 0.0, fg=0.0))
    assert not stop("t", row(3, 0.0, fg=0.0))
    assert stop("t", row(4, 0.0, fg=0.0))
    got = reg.get("t")
    assert got["stop_reason"] == "collapsed" and got["evidence"]["rule"] == "all_background"
    assert got["evidence"]["epoch"] == 4 and got["evidence"]["val_fg_ratio"] == 0.0


def test_a_non_empty_epoch_resets_the_streak() -> None:
    stop = CollapseStopper(StopRegistry("t"), patience=2, min_epoch=1)
    assert not stop("t", row(1, 0.0, fg=0.0))
    assert not stop("t", row(2, 0.1, fg=0.1))  # below min_best: the IoU-drop rule is idle
    assert not stop("t", row(3, 0.0, fg=0.0))
    assert stop("t", row(4, 0.0, fg=0.0))


def test_empty_ground_truth_is_not_a_collapse() -> None:
    stop = CollapseStopper(StopRegistry("t"), patience=1, min_epoch=1)
    assert not stop("t", row(5, 0.0, fg=0.0, gt=0.0))


def test_iou_drop_counts_only_after_a_meaningful_best() -> None:
    reg = StopRegistry("t")
    stop = CollapseStopper(reg, min_best=0.2, drop=0.25)
    assert not stop("small", row(1, 0.15))
    assert not stop("small", row(2, 0.01))  # best 0.15 < 0.2: early noise, not a collapse
    assert not stop("big", row(1, 0.5))
    assert not stop("big", row(2, 0.2))     # 0.2 >= 0.25 x 0.5
    assert stop("big", row(3, 0.11))        # 0.11 < 0.125
    assert reg.get("big")["evidence"] == {"rule": "iou_drop", "epoch": 3, "val_iou": 0.11,
                                          "best_val_iou": 0.5, "drop": 0.25}


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
    stop = CollapseStopper(StopRegistry("t"), patience=2, min_epoch=3, history=history)
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
