"""Checks that tie a space to ``TrainConfig``: known fields, the right distribution for each
field's type, and every value (fixed values, choices, range ends, design levels, points) making
a valid config when laid over the defaults and ``fixed``.

Every failure raises :class:`BadInput` whose message starts with the key at fault
(``params.img_size: ...``); ``Space`` prefixes the file name.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from camotune.errors import BadInput, clip, excerpt
from camotune.trainer.config import DEFAULTS, FIELDS, from_dict

from .dist import Dist
from .sweep_options import check_sweep

if TYPE_CHECKING:
    from .space import Space

# Fields a sweep must not search: the epoch count is ASHA's time axis (max_t), not a
# hyperparameter — a search over it prefers whatever the budget allows, and trials of different
# lengths cannot share rungs.
UNSEARCHABLE = {
    "epochs": "the epoch count is the trial budget (ASHA's max_t), not a hyperparameter; "
              "set it in fixed",
    "stage1_epochs": "the stage layout must be the same in every trial so that rungs compare "
                     "like with like; set it in fixed",
}

# Per-run paths a space must not set (in fixed, params, points or design): the sweep gives each
# trial its own folder, the dataset is the sweep's own --dataset-path, and a checkpoint to
# resume from would make every trial load (and trust) a file named by the space's author.
PER_RUN = {
    "resume_from": "each trial resumes only from its own checkpoint",
    "checkpoint_dir": "each trial writes into its own folder of the sweep",
    "dataset_path": "the dataset is the sweep's --dataset-path flag",
}

_FLAG = re.compile(r"^--([a-z0-9-]+) ")

# Integer ranges up to this many values are checked value by value against TrainConfig.
_EXHAUSTIVE_INT_RANGE = 1024


def kind(name: str) -> str:
    """A field's type name: ``"bool"``, ``"int"``, ``"float"`` or ``"str"``."""
    return str(FIELDS[name].type)


def normalise(name: str, value: Any) -> Any:
    """Integers given for float fields become floats (``lr: 1`` -> ``1.0``)."""
    if kind(name) == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def unknown_field(name: Any, key: str) -> BadInput:
    hint = difflib.get_close_matches(str(name), list(FIELDS), n=1)
    tip = f" (did you mean {hint[0]}?)" if hint else ""
    return BadInput(f"{key}: unknown TrainConfig field {excerpt(name)}{tip}")


def check_config(values: Mapping[str, Any], key: str, *, per_field: bool = False) -> None:
    """Raise BadInput ``key: <TrainConfig's message>`` unless defaults + ``values`` is valid.
    With ``per_field``, a message about the flag of one of ``values`` names ``key.field``."""
    try:
        from_dict(values, DEFAULTS, source=key)
    except BadInput as exc:
        msg = str(exc)
        if msg.startswith(key):
            raise BadInput(msg) from None
        flag = _FLAG.match(msg)
        name = flag.group(1).replace("-", "_") if flag else ""
        where = f"{key}.{clip(name)}" if per_field and name in values else key
        raise BadInput(f"{where}: {msg}") from None


def validate(space: Space) -> dict[str, Any]:
    """Check ``space``; return its normalised fields (``fixed``, ``params``, ``points``,
    ``design``, ``sweep``) for ``Space`` to store."""
    if not isinstance(space.name, str) or not space.name:
        raise BadInput(f"name: must be a non-empty string (got {excerpt(space.name)})")
    if not isinstance(space.description, str):
        raise BadInput(f"description: must be a string (got {excerpt(space.description)})")
    if space.design is not None and space.params:
        raise BadInput("design: give either params or design, not both")
    if space.design is None and not space.params:
        raise BadInput("params: missing (a space needs params to sample or a design)")
    fixed = _fixed(space.fixed)
    out: dict[str, Any] = {"fixed": fixed,
                           "sweep": check_sweep(space.sweep, space.design, fixed)}
    if space.design is not None:
        out["design"] = _design(space.design, fixed)
        out["params"] = {}
    else:
        out["params"] = _params(space.params, fixed)
    if not isinstance(space.points, (list, tuple)):
        raise BadInput(f"points: expected a list of mappings (got {excerpt(space.points)})")
    if space.points and space.design is not None:
        raise BadInput("points: only with params (a design enumerates its own trials)")
    out["points"] = [check_point(p, out["params"], fixed, f"points[{i}]")
                     for i, p in enumerate(space.points)]
    return out


def _fixed(fixed: Any) -> dict[str, Any]:
    if not isinstance(fixed, Mapping):
        raise BadInput(f"fixed: expected a mapping of TrainConfig fields (got {excerpt(fixed)})")
    for name in fixed:
        if name not in FIELDS:
            raise unknown_field(name, f"fixed.{clip(name)}")
        per_run(name, f"fixed.{name}")
    out = {name: normalise(name, v) for name, v in fixed.items()}
    check_config(out, "fixed", per_field=True)
    return out


def _params(params: Any, fixed: dict[str, Any]) -> dict[str, Dist]:
    if not isinstance(params, Mapping):
        raise BadInput(f"params: expected a mapping of field -> distribution (got {excerpt(params)})")
    out = {}
    for name, dist in params.items():
        key = f"params.{clip(name)}"
        _searchable(name, key, fixed)
        if not isinstance(dist, Dist):
            raise BadInput(f"{key}: expected a distribution (got {excerpt(dist)})")
        dist = _dist_for_field(name, dist, key)
        for value in values_to_check(dist):
            check_config({**fixed, name: value}, key)
        out[name] = dist
    return out


def per_run(name: str, key: str) -> None:
    """Raise BadInput if ``name`` is a per-run path that a space may not set."""
    if name in PER_RUN:
        raise BadInput(f"{key}: {name} cannot be set by a space file: {PER_RUN[name]}")


def _searchable(name: Any, key: str, fixed: Mapping[str, Any]) -> None:
    if name not in FIELDS:
        raise unknown_field(name, key)
    per_run(name, key)
    if name in UNSEARCHABLE:
        raise BadInput(f"{key}: {name} cannot be searched: {UNSEARCHABLE[name]}")
    if name in fixed:
        raise BadInput(f"{key}: also given in fixed (a field is either searched or fixed)")


def _dist_for_field(name: str, dist: Dist, key: str) -> Dist:
    k = kind(name)
    if dist.type in ("loguniform", "uniform") and k != "float":
        raise BadInput(f"{key}: {dist.type} samples floats but {name} is {k} "
                       f"(use {'type: int or ' if k == 'int' else ''}type: choice)")
    if dist.type == "int" and k != "int":
        raise BadInput(f"{key}: type int samples integers but {name} is {k} "
                       f"(use {'uniform, loguniform or ' if k == 'float' else ''}choice)")
    if dist.type == "choice":
        return Dist("choice", values=tuple(normalise(name, v) for v in dist.values))
    if dist.type != "int":
        return Dist(dist.type, float(dist.low), float(dist.high))
    return dist


def values_to_check(dist: Dist) -> list[Any]:
    """The values of ``dist`` a space check tries: every choice, every integer of a small
    ``int`` range, else both ends (and ``low + 1`` for a large ``int`` range)."""
    if dist.type == "choice":
        return list(dist.values)
    if dist.type == "int" and dist.high - dist.low < _EXHAUSTIVE_INT_RANGE:
        return list(range(dist.low, dist.high + 1))
    if dist.type == "int":  # too many to try: the ends, and low + 1 to catch "multiple of N"
        return [dist.low, dist.high, dist.low + 1]
    return [dist.low, dist.high]


def _design(design: Any, fixed: dict[str, Any]) -> Any:
    from .design import Design

    if not isinstance(design, Design):
        raise BadInput(f"design: expected a Design (got {excerpt(design)})")
    if "seed" in fixed:
        raise BadInput("fixed.seed: a design sets each repeat's seed (base seed + repeat); "
                       "give the base seed on the sweep's command line")
    for name, pair in design.levels.items():
        key = f"design.levels.{clip(name)}"
        if name == "seed":
            raise BadInput(f"{key}: the seed is set by design.repeats, not a factor")
        _searchable(name, key, fixed)
        for value in pair:
            check_config({**fixed, name: normalise(name, value)}, key)
    design = Design({name: (normalise(name, a), normalise(name, b))
                     for name, (a, b) in design.levels.items()},
                    design.fraction, design.repeats)
    for i, run in enumerate(design.runs()):
        check_config({**fixed, **run}, f"design run {i + 1}")
    return design


def check_point(point: Any, params: Mapping[str, Dist], fixed: Mapping[str, Any],
                key: str) -> dict[str, Any]:
    """Check one point (field -> value) against the searched ``params``: keys must be searched
    fields, values must lie in their distributions, and defaults + fixed + point must be a valid
    config. Returns the point normalised (ints -> floats for float fields)."""
    if not isinstance(point, Mapping) or not point:
        raise BadInput(f"{key}: expected a non-empty mapping of searched fields (got {excerpt(point)})")
    out = {}
    for name, value in point.items():
        if name not in FIELDS:
            raise unknown_field(name, f"{key}.{clip(name)}")
        per_run(name, f"{key}.{name}")
        if name not in params:
            raise BadInput(f"{key}.{clip(name)}: not a searched parameter "
                           f"(params: {', '.join(params) or 'none'})")
        value = normalise(name, value)
        if not params[name].contains(value):
            raise BadInput(f"{key}.{clip(name)}: {excerpt(value)} lies outside {params[name].describe()}")
        out[name] = value
    check_config({**fixed, **out}, key, per_field=True)
    return out
