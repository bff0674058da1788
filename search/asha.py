"""ASHA that records its stops: which trial it stopped at which rung, with the rung's cutoff,
in the sweep's `StopRegistry`; after a resume the rungs are refilled from ``trials.jsonl``
(Ray does not save them).

The rungs are explicit milestones (``--rungs``, or ``grace_period x reduction_factor**k``), so
they need not be a geometric series; Ray's rule decides at each: a trial continues if its
value is at least the ``1 - 1/reduction_factor`` quantile of the values already recorded at
that rung (the first trial at a rung always continues). With ``brackets`` > 1 (Hyperband),
bracket ``s`` has the rungs ``milestones[s:]``; Ray assigns each new trial a bracket.
"""

from __future__ import annotations

from pathlib import Path

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from camotune.search import compat
from camotune.search.stop_registry import StopRegistry, epoch_events

RUNG_METRICS = {"last": "val_iou", "best": "best_val_iou"}


class RecordingASHA(ASHAScheduler):
    """ASHA on the objective (``val_iou``, or with ``rung_metric="best"`` the trial's best
    ``val_iou`` so far, ``best_val_iou``) with the epoch as its clock, remembering which
    trials it stopped at which rung (reaching ``max_t`` is completion, not a stop). `replay`
    puts results recorded before a resume back into the rungs, which Ray does not save."""

    def __init__(self, registry: StopRegistry, *, max_t: int, grace_period: int = 1,
                 reduction_factor: float = 3, milestones: list[int] | None = None,
                 brackets: int = 1, rung_metric: str = "last", history: Path | None = None,
                 mode: str = "max") -> None:
        milestones = sorted(milestones) if milestones else _geometric(
            grace_period, reduction_factor, max_t)
        metric = RUNG_METRICS[rung_metric]
        super().__init__(time_attr="epoch", metric=metric, mode=mode, max_t=max_t,
                         grace_period=milestones[0] if milestones else grace_period,
                         reduction_factor=reduction_factor, brackets=brackets)
        compat.set_asha_milestones(self, [milestones[s:] for s in range(brackets)])
        self.registry = registry
        self.history = history
        self.max_t = max_t
        self.grace_period = grace_period
        self.reduction_factor = reduction_factor
        self.milestones = list(milestones)
        self.rung_metric = rung_metric
        self.metric_name = metric
        self.sign = 1.0 if mode == "max" else -1.0   # Ray stores rung values as sign x value
        self._replayed = False

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "max_t" not in state:  # pickled (tuner.pkl) before these options were kept here
            self.__dict__.update(compat.asha_options(self))
        if "milestones" not in self.__dict__:
            self.milestones = _geometric(self.grace_period, self.reduction_factor, self.max_t)
            self.rung_metric = "last"

    def on_trial_add(self, tune_controller, trial) -> None:
        if not self._replayed:
            self._replayed = True
            best: dict[str, float] = {}
            for tid, epoch, metrics in epoch_events(self.history):
                value = metrics.get(self.metric_name)
                if value is None and self.metric_name == "best_val_iou" \
                        and metrics.get("val_iou") is not None:
                    value = max(best.get(tid, float("-inf")), float(metrics["val_iou"]))
                if value is not None:
                    best[tid] = float(value)
                    self.replay(tid, epoch, float(value))
        super().on_trial_add(tune_controller, trial)

    @property
    def rungs(self) -> list[int]:
        """The rung epochs of the first bracket, lowest first."""
        return list(self.milestones)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        epoch = result.get("epoch")
        cutoff = self._cutoff_at(trial.trial_id, int(epoch)) if epoch is not None else None
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and epoch is not None and epoch < self.max_t:
            evidence = {"val_iou": result.get("val_iou"), "rung_cutoff": cutoff}
            if self.metric_name != "val_iou":
                evidence.update(rung_metric=self.metric_name,
                                rung_value=result.get(self.metric_name))
            self.registry.mark(trial.trial_id, "asha_stopped", rung=int(epoch),
                               evidence=evidence)
        return action

    def _cutoff_at(self, trial_id: str, epoch: int) -> float | None:
        """The cutoff at the rung ``epoch`` of the trial's bracket (before this result)."""
        own = compat.asha_trial_bracket(self, trial_id)
        for bracket, milestone, recorded in compat.asha_rungs(self):
            if milestone == epoch and (own is None or bracket is own):
                value = compat.asha_cutoff(bracket, recorded)
                return None if value is None else value * self.sign
        return None

    def replay(self, trial_id: str, epoch: int, value: float) -> None:
        """Record a result from before a resume in the rung of ``epoch`` (if it is one), in
        every bracket that has it (a trial's bracket is not saved with the experiment)."""
        for _, milestone, recorded in compat.asha_rungs(self):
            if milestone == epoch and trial_id not in recorded:
                recorded[trial_id] = self.sign * value


def _geometric(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    out, t = [], grace_period
    while t <= max_t:
        out.append(int(t))
        t *= reduction_factor
    return out
