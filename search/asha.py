"""ASHA that records its stops: which trial it stopped at which rung, with the rung's cutoff,
in the sweep's `StopRegistry`; after a resume the rungs are refilled from ``trials.jsonl``
(Ray does not save them)."""

from __future__ import annotations

from pathlib import Path

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from camotune.search import compat
from camotune.search.stop_registry import StopRegistry, epoch_events


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
        self.max_t = max_t
        self.grace_period = grace_period
        self.reduction_factor = reduction_factor
        self.metric_name = metric
        self.sign = 1.0 if mode == "max" else -1.0   # Ray stores rung values as sign x value
        self._replayed = False

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "max_t" not in state:  # pickled (tuner.pkl) before these options were kept here
            self.__dict__.update(compat.asha_options(self))

    def on_trial_add(self, tune_controller, trial) -> None:
        if not self._replayed:
            self._replayed = True
            for tid, epoch, metrics in epoch_events(self.history):
                if metrics.get(self.metric_name) is not None:
                    self.replay(tid, epoch, float(metrics[self.metric_name]))
        super().on_trial_add(tune_controller, trial)

    @property
    def rungs(self) -> list[int]:
        """The rung epochs: ``grace_period x reduction_factor**k <= max_t``."""
        out, t = [], self.grace_period
        while t <= self.max_t:
            out.append(int(t))
            t *= self.reduction_factor
        return out

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        epoch = result.get("epoch")
        cutoff = self._cutoff_at(int(epoch)) if epoch is not None else None  # before recording
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and epoch is not None and epoch < self.max_t:
            self.registry.mark(trial.trial_id, "asha_stopped", rung=int(epoch), evidence={
                "val_iou": result.get("val_iou"), "rung_cutoff": cutoff})
        return action

    def _cutoff_at(self, epoch: int) -> float | None:
        for bracket, milestone, recorded in compat.asha_rungs(self):
            if milestone == epoch:
                value = compat.asha_cutoff(bracket, recorded)
                return None if value is None else value * self.sign
        return None

    def replay(self, trial_id: str, epoch: int, value: float) -> None:
        """Record a result from before a resume in the rung of ``epoch`` (if it is one)."""
        for _, milestone, recorded in compat.asha_rungs(self):
            if milestone == epoch and trial_id not in recorded:
                recorded[trial_id] = self.sign * value
