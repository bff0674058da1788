"""`Tracker`: what a sweep's driver-side records tell a tracking backend.

The Ray Tune callback in ``camotune.search`` calls these methods at every sweep and trial event;
`camotune.tracking.SweepTracker` implements them with MLflow. The base class does nothing, so a
sweep without tracking passes a plain ``Tracker()``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Tracker:
    """What the records callback tells a tracking backend; the base class does nothing.
    ``settings`` is the sweep's ``SweepSettings``."""

    def sweep_start(self, settings: Any) -> None: ...
    def trial_start(self, trial_id: str, record: dict[str, Any]) -> None: ...
    def trial_epoch(self, trial_id: str, metrics: dict[str, Any]) -> None: ...
    def trial_end(self, trial_id: str, record: dict[str, Any], trial_dir: Path) -> None: ...
    def trial_orphaned(self, trial_id: str) -> None: ...
    def sweep_end(self, sweep_dir: Path) -> None: ...
    def sweep_abort(self, status: str) -> None: ...
