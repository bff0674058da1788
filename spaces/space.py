"""``Space``: a search space read from a YAML file, validated against ``TrainConfig``.

A space file (``spaces/*.yaml`` for the presets, or any path) is a mapping with these keys::

    name: my-space          # optional; default: the file name without .yaml
    description: what this space is for
    params:                 # TrainConfig field -> distribution (see camotune.spaces.dist)
      lr:           {type: loguniform, low: 1.0e-5, high: 3.0e-3}
      batch_size:   {type: choice, values: [2, 4, 8, 16]}
      warmup_steps: {type: int, low: 0, high: 500}
    fixed:                  # TrainConfig field -> value, laid over the sweep's base config
      epochs: 40
    points:                 # optional: configs tried first, in order (e.g. a known baseline);
      - {lr: 2.5e-4, batch_size: 2}   # params left out of a point are sampled
    design:                 # instead of params: a two-level factorial (camotune.spaces.design)
      {type: factorial, levels: {FIELD: [A, B], ...}, fraction: 1, repeats: 1}
    sweep:                  # optional defaults for the sweep; its command-line flags win
      {trial_scheduler: asha, collapse_stopper: true, num_samples: 20, grace_period: 2,
       reduction_factor: 3, max_concurrent: 4}

Exactly one of ``params`` and ``design`` is given. ``sweep`` keys (see `sweep_section`): ``trial_scheduler`` (``asha`` or
``fifo``), ``collapse_stopper`` (bool), ``num_samples`` (int >= 1; not with a design, which runs
runs x repeats trials), ``grace_period`` (int >= 1, at most ``fixed.epochs``),
``reduction_factor`` (int >= 2), ``rungs`` (increasing epochs, the last at most
``fixed.epochs``), ``rung_metric`` (``best`` or ``last``), ``brackets`` (int >= 1),
``max_concurrent`` (int >= 1), ``collapse_min_steps``, ``collapse_patience_steps`` (ints >= 0),
``collapse_drop_evals`` (int >= 1).

``epochs`` and ``stage1_epochs`` cannot be searched (the epoch count is ASHA's budget axis, not a
hyperparameter); a design sets ``seed`` itself (repeat ``r`` uses ``base_seed + r``). Every value
(fixed values, choices, range ends, every integer of a small ``int`` range, design levels and
every design run, points) must make a valid ``TrainConfig`` laid over the defaults and
``fixed``. Any failure raises :class:`BadInput` with one line naming the file and the key, e.g.
``spaces/x.yaml: params.img_size: --img-size must be a multiple of 32 (got 100)``.
``1e-4`` (no dot) is read as a number, and a key given twice is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camotune.errors import BadInput, clip, excerpt

from .design import Design
from .dist import Dist
from .validate import check_point, validate
from .yamlio import read_yaml

if TYPE_CHECKING:
    from camotune.trainer.config import TrainConfig

log = logging.getLogger(__name__)

TOP_KEYS = ("name", "description", "params", "fixed", "points", "design", "sweep")


@dataclass(frozen=True)
class Space:
    """A validated search space. Construction validates (see the module docstring); errors
    name ``origin`` (the file it came from) or, when that is empty, the space's name.

    ``params`` is empty for a design space; ``design`` is None for a sampled one. Integers given
    for float fields are stored as floats. ``origin`` takes no part in equality.
    """

    name: str
    description: str = ""
    params: dict[str, Dist] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    points: list[dict[str, Any]] = field(default_factory=list)
    design: Design | None = None
    sweep: dict[str, Any] = field(default_factory=dict)
    origin: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        try:
            normalised = validate(self)
        except BadInput as exc:
            raise BadInput(f"{self._where}: {exc}") from None
        for key, value in normalised.items():
            object.__setattr__(self, key, value)

    @property
    def _where(self) -> str:
        return self.origin or f"space {excerpt(self.name)}"

    # -- what is searched ------------------------------------------------------------------------
    @property
    def searched(self) -> tuple[str, ...]:
        """The fields that vary between trials: the params, or the design's factors (plus
        ``seed`` when the design has repeats > 1)."""
        if self.design is None:
            return tuple(self.params)
        return self.design.factors + (("seed",) if self.design.repeats > 1 else ())

    def optuna_distributions(self) -> dict[str, Any]:
        """field -> ``optuna.distributions.BaseDistribution`` (``FloatDistribution`` with
        ``log=True`` for loguniform, ``IntDistribution``, ``CategoricalDistribution``).
        Empty for a design space: a design enumerates its trials instead of sampling."""
        return {name: dist.to_optuna() for name, dist in self.params.items()}

    def design_trials(self, base_seed: int) -> list[dict[str, Any]]:
        """Every design run x repeat as a params dict, repeat ``r`` with ``seed = base_seed +
        r``: all runs of repeat 0 in standard order, then repeat 1, ... ``[]`` for a params
        space."""
        if isinstance(base_seed, bool) or not isinstance(base_seed, int) or base_seed < 0:
            raise BadInput(f"{self._where}: base seed must be an integer >= 0 (got {excerpt(base_seed)})")
        if self.design is None:
            return []
        runs = self.design.runs()
        return [{**run, "seed": base_seed + r}
                for r in range(self.design.repeats) for run in runs]

    # -- configs ---------------------------------------------------------------------------------
    def apply(self, base: TrainConfig, params: Mapping[str, Any]) -> TrainConfig:
        """``base`` + ``fixed`` + ``params`` (params win) as a validated config. NumPy scalars
        (as Ray's samplers return them) become Python values. Unknown fields or invalid values
        raise :class:`BadInput` naming the space and the flag."""
        from camotune.trainer.config import from_dict

        values = {**self.fixed, **{k: _plain(v) for k, v in params.items()}}
        try:
            return from_dict(values, base, source=self._where)
        except BadInput as exc:
            msg = str(exc)
            raise BadInput(msg if msg.startswith(self._where) else f"{self._where}: {msg}") \
                from None

    def max_epochs(self, base: TrainConfig) -> int:
        """Epochs of a full trial (``fixed`` over ``base``; never searched): ASHA's ``max_t``."""
        return self.apply(base, {}).epochs

    # -- serialisation -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, scalars; YAML- and JSON-safe) in the space-file format,
        name included; ``Space.from_dict`` rebuilds an equal space."""
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        if self.design is not None:
            out["design"] = self.design.to_dict()
        else:
            out["params"] = {name: dist.to_dict() for name, dist in self.params.items()}
        out["fixed"] = dict(self.fixed)
        if self.points:
            out["points"] = [dict(p) for p in self.points]
        if self.sweep:
            out["sweep"] = dict(self.sweep)
        return out

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "space", name: str | None = None) -> Space:
        """Build from the space-file form (a parsed YAML file or `to_dict` output). ``source``
        names the file in error messages; ``name`` is used when ``data`` has no ``name``."""
        if not isinstance(data, Mapping):
            got = "an empty file" if data is None else type(data).__name__
            raise BadInput(f"{source}: expected a mapping with description and params or "
                           f"design (got {got})")
        for key in data:
            if key not in TOP_KEYS:
                raise BadInput(f"{source}: {clip(key)}: unknown top-level key "
                               f"(one of {', '.join(TOP_KEYS)})")
        name = data.get("name") or name
        if not name:
            raise BadInput(f"{source}: name: missing")
        params = data.get("params") or {}
        if not isinstance(params, Mapping):
            raise BadInput(f"{source}: params: expected a mapping of field -> distribution "
                           f"(got {excerpt(params)})")
        dists = {}
        for field_name, spec in params.items():
            try:
                dists[field_name] = Dist.from_dict(spec)
            except BadInput as exc:
                raise BadInput(f"{source}: params.{clip(field_name)}: {exc}") from None
        design = None
        if data.get("design") is not None:
            try:
                design = Design.from_dict(data["design"])
            except BadInput as exc:
                raise BadInput(f"{source}: {exc}") from None
        points, description = data.get("points"), data.get("description")
        return cls(name=name,
                   description="" if description is None else description,
                   params=dists,
                   fixed=_mapping_or_as_is(data.get("fixed")),
                   points=[] if points is None else points,
                   design=design,
                   sweep=_mapping_or_as_is(data.get("sweep")),
                   origin=source)


def _mapping_or_as_is(value: Any) -> Any:
    """``None`` (an empty YAML key) -> ``{}``; a mapping -> a dict; anything else is passed on
    for `validate` to reject with the key's name."""
    if value is None:
        return {}
    return dict(value) if isinstance(value, Mapping) else value


def _plain(value: Any) -> Any:
    """A NumPy scalar -> the Python scalar (``np.int64(4)`` -> ``4``, ``np.bool_`` -> bool)."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


# -- files ---------------------------------------------------------------------------------------

def list_presets() -> list[str]:
    """Names of the spaces shipped with camotune (``spaces/*.yaml``), sorted."""
    folder = resources.files(__package__)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_space(name_or_path: str) -> Space:
    """A preset by name (``"smoke"``) or a space file by path. A bare name that is a preset
    wins over a file of that name in the working folder; give ``./smoke.yaml`` for the file.
    Anything wrong raises :class:`BadInput` with one line naming the file and the key."""
    text = str(name_or_path)
    if text in list_presets():
        path = str(resources.files(__package__).joinpath(f"{text}.yaml"))
    elif Path(text).suffix in (".yaml", ".yml") or "/" in text or Path(text).exists():
        path = text
    else:
        raise BadInput(f"space {excerpt(text)} is neither a preset ({', '.join(list_presets())}) "
                       "nor a file")
    space = Space.from_dict(read_yaml(path), source=path, name=Path(path).stem)
    log.debug("space=%s origin=%s searched=%s", space.name, path, ",".join(space.searched))
    return space


def load_points(path: str, space: Space) -> list[dict[str, Any]]:
    """Read a points file (``--points FILE``): a YAML list of mappings, each checked as the
    space's ``points`` are (searched fields only, values inside their distributions, a valid
    config). Returns the points in file order; errors name the file and the entry (``[2].lr``)."""
    data = read_yaml(path)
    if space.design is not None:
        raise BadInput(f"{path}: points need a space with params; space {excerpt(space.name)} is a "
                       "design, which enumerates its own trials")
    if not isinstance(data, list) or not data:
        raise BadInput(f"{path}: expected a non-empty YAML list of mappings, one per point "
                       f"(got {type(data).__name__})")
    out = []
    for i, point in enumerate(data):
        try:
            out.append(check_point(point, space.params, space.fixed, f"[{i}]"))
        except BadInput as exc:
            raise BadInput(f"{path}: {exc}") from None
    return out
