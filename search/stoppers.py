"""Who ended a trial, and why: ASHA that records its stops, and the collapse stopper.

Both live in the sweep's driver and write their decisions into one `StopRegistry`, which the
records callback reads when a trial ends; so every trial gets exactly one ``stop_reason``
(DESIGN.md: completed, asha_stopped, collapsed, diverged, oom, error) with the evidence for it.
All three objects are pickled together with the Tuner, so they still share the registry after
``Tuner.restore``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Stopper
from ray.tune.schedulers import ASHAScheduler, TrialScheduler


def epoch_events(path: Path | None) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(trial_id, epoch, metrics) of every epoch recorded in a trials.jsonl."""
    from camotune.sweepdir.events import read_events

    if path is None:
        return
    for event in read_events(path):
        if event.get("event") == "epoch":
            yield event["trial_id"], int(event["epoch"]), event["metrics"]


_REGISTRIES: dict[str, StopRegistry] = {}


def _registry_for(key: str) -> StopRegistry:
    return _REGISTRIES.setdefault(key, StopRegistry(key))


@dataclass
class StopRegistry:
    """Stops decided in the driver: trial_id -> {"stop_reason", "rung", "evidence"}.

    One per sweep (``key`` = the sweep folder) and per process: the scheduler, the stopper and
    the records callback each hold it, and Ray may unpickle them separately on restore, so
    unpickling returns the process's registry for the key rather than a copy.
    """

    key: str
    stops: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _REGISTRIES.setdefault(self.key, self)

    def __reduce__(self):
        return (_registry_for, (self.key,))

    def mark(self, trial_id: str, reason: str, *, rung: int | None = None,
             evidence: dict[str, Any] | None = None) -> None:
        self.stops.setdefault(trial_id, {"stop_reason": reason, "rung": rung,
                                         "evidence": evidence or {}})

    def get(self, trial_id: str) -> dict[str, Any] | None:
        return self.stops.get(trial_id)


class RecordingASHA(ASHAScheduler):
    """ASHA on ``val_iou`` with the epoch as its clock, remembering which trials it stopped at
    which rung (reaching ``max_t`` is completion, not a stop). `replay` puts results recorded
    before a resume back into the rungs, which Ray does not save."""

    def __init__(self, registry: StopRegistry, *, max_t: int, grace_period: int,
                 reduction_factor: float, history: Path | None = None,
                 metric: str = "val_iou", mode: str = "max") -> None:
        super().__init__(time_attr="epoch", metric=metric, mode=mode, max_t=max_t,
                         grace_period=grace_period, reduction_factor=reduction_factor)
        self.registry = registry
        self.history = history
        self._replayed = False

    def on_trial_add(self, tune_controller, trial) -> None:
        if not self._replayed:
            self._replayed = True
            for tid, epoch, metrics in epoch_events(self.history):
                if metrics.get(self._metric) is not None:
                    self.replay(tid, epoch, float(metrics[self._metric]))
        super().on_trial_add(tune_controller, trial)

    @property
    def rungs(self) -> list[int]:
        return sorted(int(m) for m, _ in self._brackets[0]._rungs)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        epoch = result.get("epoch")
        cutoff = self._cutoff_at(int(epoch)) if epoch is not None else None  # before recording
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and epoch is not None and epoch < self._max_t:
            self.registry.mark(trial.trial_id, "asha_stopped", rung=int(epoch), evidence={
                "val_iou": result.get("val_iou"), "rung_cutoff": cutoff})
        return action

    def _cutoff_at(self, epoch: int) -> float | None:
        for bracket in self._brackets:
            for milestone, recorded in bracket._rungs:
                if int(milestone) == epoch:
                    value = bracket.cutoff(recorded)
                    return None if value is None else float(value) * self._metric_op
        return None

    def replay(self, trial_id: str, epoch: int, value: float) -> None:
        """Record a result from before a resume in the rung of ``epoch`` (if it is one)."""
        for bracket in self._brackets:
            for milestone, recorded in bracket._rungs:
                if int(milestone) == epoch and trial_id not in recorded:
                    recorded[trial_id] = self._metric_op * value


class CollapseStopper(Stopper):
    """Stops a trial whose predictions collapse.

    - ``collapsed``: ``val_fg_ratio`` below ``fg_ratio`` while ``gt_fg_ratio`` is above it, for
      ``patience`` epochs in a row counted from epoch ``min_epoch`` on (an all-background model;
      a fresh decoder often predicts nothing in its first epochs); or, once the trial's best
      ``val_iou`` reached ``min_best`` (small objects make near-empty early predictions normal),
      a ``val_iou`` below ``drop`` x that best.
    - ``diverged``: a non-finite ``train_loss`` or ``val_iou``.

    NaN or missing metrics other than those never trigger a stop.
    """

    def __init__(self, registry: StopRegistry, *, fg_ratio: float = 0.002, patience: int = 2,
                 min_best: float = 0.2, drop: float = 0.25, min_epoch: int = 3,
                 history: Path | None = None) -> None:
        self.registry = registry
        self.history = history
        self._replayed = False
        self.fg_ratio = fg_ratio
        self.patience = patience
        self.min_best = min_best
        self.drop = drop
        self.min_epoch = min_epoch
        self._empty_streak: dict[str, int] = {}
        self._best: dict[str, float] = {}

    def __call__(self, trial_id: str, result: dict) -> bool:
        if not self._replayed:
            # After a resume: rebuild each trial's streak and best from the recorded epochs.
            self._replayed = True
            for tid, _, metrics in epoch_events(self.history):
                self._observe(tid, metrics)
        return self._observe(trial_id, result, decide=True)

    def _observe(self, trial_id: str, result: dict, *, decide: bool = False) -> bool:
        epoch = result.get("epoch")
        if epoch is None:
            return False
        iou, loss = result.get("val_iou"), result.get("train_loss")
        for name, value in (("train_loss", loss), ("val_iou", iou)):
            if decide and value is not None and not math.isfinite(value):
                self.registry.mark(trial_id, "diverged", evidence={"epoch": epoch, name: value})
                return True
        pred_fg, gt_fg = result.get("val_fg_ratio"), result.get("gt_fg_ratio")
        empty = pred_fg is not None and gt_fg is not None and pred_fg < self.fg_ratio < gt_fg
        # Epochs before min_epoch do not count: a fresh decoder often predicts nothing at first.
        streak = self._empty_streak.get(trial_id, 0)
        self._empty_streak[trial_id] = streak + 1 if empty and epoch >= self.min_epoch else 0
        if decide and self._empty_streak[trial_id] >= self.patience:
            self.registry.mark(trial_id, "collapsed", evidence={
                "rule": "all_background", "epoch": epoch, "val_fg_ratio": pred_fg,
                "gt_fg_ratio": gt_fg, "epochs_in_a_row": self._empty_streak[trial_id]})
            return True
        if iou is None:
            return False
        best = max(self._best.get(trial_id, -math.inf), iou)
        self._best[trial_id] = best
        if decide and best >= self.min_best and iou < self.drop * best:
            self.registry.mark(trial_id, "collapsed", evidence={
                "rule": "iou_drop", "epoch": epoch, "val_iou": iou, "best_val_iou": best,
                "drop": self.drop})
            return True
        return False

    def stop_all(self) -> bool:
        return False
