"""The collapse stopper: ends a trial whose predictions collapse to all background or whose
IoU falls far below its own best and stays there, and a trial that diverged; its decisions go
to the sweep's `StopRegistry`.

It judges the raw weights (``val_fg_ratio_raw``, ``val_iou_raw``), whatever ``--objective``
says: an EMA that has barely moved from the initial weights can predict a lot of foreground
while the raw weights have collapsed. Records written before those keys existed fall back to
``val_fg_ratio`` and ``val_iou``. Its clock is the optimizer step (``optimizer_steps``), not
the epoch: a large-batch trial takes few steps per epoch and is not labelled collapsed just
because it starts slowly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ray.tune import Stopper

from camotune.search.stop_registry import StopRegistry, epoch_events


def _first(result: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if result.get(key) is not None:
            return result[key]
    return None


class CollapseStopper(Stopper):
    """Stops a trial whose predictions collapse.

    - ``collapsed`` (rule ``all_background``): the raw weights' predicted foreground share
      below ``fg_ratio`` while ``gt_fg_ratio`` is above it, at every evaluation over at least
      ``patience_steps`` optimizer steps (from the first empty evaluation on), counted only
      from step ``min_steps`` on (a fresh decoder often predicts nothing in its first steps).
      The deprecated ``patience``/``min_epoch`` count epochs instead (``patience`` empty
      evaluations in a row from epoch ``min_epoch``), for sweeps that set them.
    - ``collapsed`` (rule ``iou_drop``): once the trial's best raw IoU reached ``min_best``
      (small objects make near-empty early predictions normal), a raw IoU below ``drop`` x that
      best at ``drop_evals`` evaluations in a row (one dip is not a collapse).
    - ``diverged``: a non-finite ``train_loss`` or ``val_iou``.

    NaN or missing metrics other than those never trigger a stop. A result for an epoch the
    stopper has seen already (a resumed trial replaying epochs since its last checkpoint) is
    ignored.
    """

    def __init__(self, registry: StopRegistry, *, fg_ratio: float = 0.002,
                 min_steps: int = 1000, patience_steps: int = 400, min_best: float = 0.2,
                 drop: float = 0.25, drop_evals: int = 2, patience: int | None = None,
                 min_epoch: int | None = None, history: Path | None = None) -> None:
        self.registry = registry
        self.history = history
        self._replayed = False
        self.fg_ratio = fg_ratio
        self.min_steps = min_steps
        self.patience_steps = patience_steps
        self.min_best = min_best
        self.drop = drop
        self.drop_evals = drop_evals
        self.patience = patience
        self.min_epoch = min_epoch
        # trial -> (step, epoch) of the streak's first empty evaluation, its evaluations
        self._empty: dict[str, tuple[int, int, int]] = {}
        self._best: dict[str, float] = {}
        self._below: dict[str, int] = {}
        self._last_epoch: dict[str, int] = {}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "min_steps" not in state:  # pickled by a camotune that counted epochs only
            self.__dict__.update(min_steps=0, patience_steps=0, drop_evals=1, _below={},
                                 _last_epoch={}, _empty={}, _replayed=False)

    def __call__(self, trial_id: str, result: dict) -> bool:
        if not self._replayed:
            # After a resume: rebuild each trial's streaks and best from the recorded epochs.
            self._replayed = True
            for tid, _, metrics in epoch_events(self.history):
                self._observe(tid, metrics)
        return self._observe(trial_id, result, decide=True)

    def _observe(self, trial_id: str, result: dict, *, decide: bool = False) -> bool:
        epoch = result.get("epoch")
        if epoch is None or int(epoch) <= self._last_epoch.get(trial_id, 0):
            return False
        epoch = int(epoch)
        self._last_epoch[trial_id] = epoch
        iou = _first(result, "val_iou_raw", "val_iou")
        for name, value in (("train_loss", result.get("train_loss")),
                            ("val_iou", result.get("val_iou"))):
            if decide and value is not None and not math.isfinite(value):
                self.registry.mark(trial_id, "diverged", evidence={"epoch": epoch, name: value})
                return True
        if self._all_background(trial_id, epoch, result, decide):
            return True
        return self._iou_drop(trial_id, epoch, iou, decide)

    def _all_background(self, trial_id: str, epoch: int, result: dict, decide: bool) -> bool:
        pred_fg = _first(result, "val_fg_ratio_raw", "val_fg_ratio")
        gt_fg = result.get("gt_fg_ratio")
        steps = result.get("optimizer_steps")
        by_epochs = self.patience is not None or self.min_epoch is not None or steps is None
        empty = pred_fg is not None and gt_fg is not None and pred_fg < self.fg_ratio < gt_fg
        if by_epochs:
            counted = empty and epoch >= (self.min_epoch if self.min_epoch is not None else 3)
        else:
            counted = empty and steps >= self.min_steps
        if not counted:
            self._empty.pop(trial_id, None)
            return False
        step = int(steps) if steps is not None else 0
        first_step, first_epoch, n = self._empty.get(trial_id, (step, epoch, 0))
        self._empty[trial_id] = (first_step, first_epoch, n + 1)
        if by_epochs:
            fired = n + 1 >= (self.patience if self.patience is not None else 2)
        else:
            fired = step - first_step >= self.patience_steps
        if decide and fired:
            evidence = {"rule": "all_background", "epoch": epoch, "val_fg_ratio": pred_fg,
                        "gt_fg_ratio": gt_fg, "epochs_in_a_row": n + 1,
                        "empty_since_epoch": first_epoch}
            if not by_epochs:
                evidence.update(optimizer_steps=step, steps_empty=step - first_step)
            self.registry.mark(trial_id, "collapsed", evidence=evidence)
            return True
        return False

    def _iou_drop(self, trial_id: str, epoch: int, iou: float | None, decide: bool) -> bool:
        if iou is None or not math.isfinite(iou):
            return False
        best = max(self._best.get(trial_id, -math.inf), iou)
        self._best[trial_id] = best
        below = best >= self.min_best and iou < self.drop * best
        self._below[trial_id] = self._below.get(trial_id, 0) + 1 if below else 0
        if decide and self._below[trial_id] >= self.drop_evals:
            self.registry.mark(trial_id, "collapsed", evidence={
                "rule": "iou_drop", "epoch": epoch, "val_iou": iou, "best_val_iou": best,
                "drop": self.drop, "evaluations_below": self._below[trial_id]})
            return True
        return False

    def stop_all(self) -> bool:
        return False
