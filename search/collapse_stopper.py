"""The collapse stopper: ends a trial whose predictions collapse to all background or whose
IoU falls far below its own best, and a trial that diverged; its decisions go to the sweep's
`StopRegistry`."""

from __future__ import annotations

import math
from pathlib import Path

from ray.tune import Stopper

from camotune.search.stop_registry import StopRegistry, epoch_events


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
