"""`SweepSettings`: everything a sweep is, written first to ``sweep.yaml`` in its folder.

``camotune resume SWEEP_DIR`` needs nothing else: the resolved space, scheduler, searcher,
stopper thresholds, resources, the base config, the tracking URI and experiment.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from camotune.errors import BadInput
from camotune.spaces import Space
from camotune.spaces.sweep_options import CollapseSettings, SweepOptions
from camotune.sweepdir import SWEEP_FILE, read_settings_dict, write_settings_dict
from camotune.trainer.config import TrainConfig, from_dict, to_dict


@dataclass(frozen=True)
class SweepSettings(SweepOptions):
    """Everything a sweep is: what it searches (``space`` over ``base``), where it lives
    (``storage_path/name``), and its options (`SweepOptions`: each field's default, help, rule
    and flag are in its metadata)."""

    name: str
    storage_path: str                      # absolute; the sweep folder is storage_path/name
    space: Space
    space_source: str                      # preset name or file the space came from
    base: TrainConfig                      # base config (training flags given to `sweep`)
    seed: int = 0
    points: list[dict[str, Any]] = field(default_factory=list)
    warm_start: str | None = None
    # Explicit design trials (params dicts, seed included) replacing the space's design
    # enumeration: `camotune why` writes its generated design here.
    trials: list[dict[str, Any]] = field(default_factory=list)
    created: str = ""
    version: str = ""
    tracking_auth: str | None = None       # basic or token: a secret of the URI, kept in env

    @property
    def sweep_dir(self) -> Path:
        return Path(self.storage_path) / self.name

    @property
    def max_epochs(self) -> int:
        return self.space.max_epochs(self.base)

    @property
    def rung_epochs(self) -> list[int]:
        """ASHA's rung epochs, lowest first: ``--rungs``, else ``grace_period x
        reduction_factor**k <= max_epochs``; [] with FIFO. Hyperband bracket ``s`` uses
        ``rung_epochs[s:]``."""
        if self.scheduler != "asha":
            return []
        return rung_epochs(self.rungs, self.grace_period, self.reduction_factor,
                           self.max_epochs)

    def check_rungs(self) -> None:
        """BadInput when a ``--rungs`` epoch exceeds the trials' epochs or there are more
        ``--brackets`` than rungs."""
        if self.scheduler != "asha":
            return
        if self.rungs and self.rungs[-1] > self.max_epochs:
            raise BadInput(f"--rungs: rung {self.rungs[-1]} exceeds the trials' "
                           f"{self.max_epochs} epochs")
        if self.brackets > max(1, len(self.rung_epochs)):
            raise BadInput(f"--brackets {self.brackets}: more brackets than rungs "
                           f"({', '.join(map(str, self.rung_epochs))})")

    @property
    def is_design(self) -> bool:
        return self.space.design is not None

    def trial_params(self) -> list[dict[str, Any]]:
        """The design's trials (factorial spaces), in order; [] for sampled spaces. Explicit
        ``trials`` (a generated design, `camotune why`) win over the space's enumeration."""
        if not self.is_design:
            return []
        return [dict(t) for t in self.trials] or self.space.design_trials(self.base.seed)

    def to_dict(self) -> dict[str, Any]:
        own = [f for f in dataclasses.fields(self) if f.name not in _OPTION_NAMES]
        options = [f for f in dataclasses.fields(self) if f.name in _OPTION_NAMES]
        d = {f.name: getattr(self, f.name) for f in own + options}
        d["space"] = self.space.to_dict()
        d["base"] = to_dict(self.base)
        d["collapse"] = dataclasses.asdict(self.collapse)
        d["sweep_dir"] = str(self.sweep_dir)
        d["max_epochs"] = self.max_epochs
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = SWEEP_FILE) -> SweepSettings:
        d = dict(d)
        d.pop("sweep_dir", None)
        d.pop("max_epochs", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise BadInput(f"{source}: unknown keys {', '.join(unknown)}")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d
                   and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise BadInput(f"{source}: missing keys {', '.join(missing)}")
        for key in ("name", "storage_path", "space_source"):
            if not isinstance(d[key], str):
                raise BadInput(f"{source}: {key}: a string is required (got {type(d[key]).__name__})")
        d["space"] = Space.from_dict(d["space"])
        d["base"] = from_dict(d["base"], source=source)
        collapse = d.get("collapse") or {}
        known_collapse = {f.name for f in dataclasses.fields(CollapseSettings)}
        if not isinstance(collapse, dict) or set(collapse) - known_collapse:
            bad = sorted(map(str, set(collapse) - known_collapse)) if isinstance(collapse, dict) \
                else [repr(type(collapse).__name__)]
            raise BadInput(f"{source}: collapse: unknown keys {', '.join(bad)} (known: "
                           f"{', '.join(sorted(known_collapse))})")
        d["collapse"] = CollapseSettings(**collapse)
        try:
            return cls(**d)
        except TypeError as exc:  # a value of the wrong kind
            raise BadInput(f"{source}: {exc}") from None


_OPTION_NAMES = {f.name for f in dataclasses.fields(SweepOptions)}


def rung_epochs(rungs: list[int] | None, grace_period: int, reduction_factor: float,
                max_epochs: int) -> list[int]:
    """The rung epochs of explicit ``rungs`` (those up to ``max_epochs``), else the geometric
    series ``grace_period x reduction_factor**k <= max_epochs``."""
    if rungs:
        return [int(r) for r in rungs if r <= max_epochs]
    out, t = [], grace_period
    while t <= max_epochs:
        out.append(int(t))
        t *= reduction_factor
    return out

__all__ = ["CollapseSettings", "SweepSettings", "read_settings", "write_settings"]


def write_settings(settings: SweepSettings) -> Path:
    """Write ``settings`` as the sweep folder's ``sweep.yaml``; returns its path."""
    return write_settings_dict(settings.sweep_dir, settings.to_dict())


def read_settings(sweep_dir: str | os.PathLike) -> SweepSettings:
    """The settings of a sweep folder; a folder that is not a sweep is BadInput."""
    sweep_dir = Path(sweep_dir)
    data = read_settings_dict(sweep_dir)
    path = sweep_dir / SWEEP_FILE
    settings = SweepSettings.from_dict(data, source=str(path))
    if settings.sweep_dir.resolve() != sweep_dir.resolve():
        # The folder was moved or copied: it is where it is now.
        settings = dataclasses.replace(settings, storage_path=str(sweep_dir.resolve().parent),
                                       name=sweep_dir.name)
    return settings
