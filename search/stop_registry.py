"""Who ended a trial, and why: the decisions of the driver's ASHA and collapse stopper.

Both write them into one `StopRegistry`, which the records callback reads when a trial ends;
so every trial gets exactly one ``stop_reason`` (completed, asha_stopped, collapsed, diverged,
oom, error) with the evidence for it. All three objects are pickled together with the Tuner,
so they still share the registry after ``Tuner.restore``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
