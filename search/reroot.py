"""Re-rooting a restored Tuner at the folder being resumed (a copied or moved sweep folder).

``Tuner.restore(path)`` takes the experiment's own location from ``path``, but the objects
pickled in ``tuner.pkl`` (camotune's callback, scheduler, stopper and searcher, and the
`SweepSettings` they hold) keep the absolute paths of the folder they were created in:
resuming a copy would append to the original's ``trials.jsonl``. `reroot` walks those
objects once after the restore and points them at the folder being resumed: every
`SweepSettings` becomes the one read from that folder's ``sweep.yaml``, and every path
string under the old folder is moved under the new one.
"""

from __future__ import annotations

import os
from pathlib import PurePath
from typing import Any

_ATOMS = (int, float, bool, bytes, type(None), str, PurePath)


def reroot(roots: list[Any], settings: Any) -> int:
    """Point the objects reachable from ``roots`` at ``settings.sweep_dir``; returns how
    many references were changed (0 when nothing pointed elsewhere)."""
    from camotune.search.settings import SweepSettings

    found: list[SweepSettings] = []
    _walk(roots, lambda v: found.append(v) if isinstance(v, SweepSettings) else None)
    old = {str(s.sweep_dir) for s in found if s.sweep_dir != settings.sweep_dir}
    changed = 0

    def fix(value: Any) -> Any:
        nonlocal changed
        if isinstance(value, SweepSettings):
            if value is not settings:
                changed += 1
            return settings
        if isinstance(value, (str, PurePath)):
            text = str(value)
            for prefix in old:
                if text == prefix or text.startswith(prefix + os.sep):
                    changed += 1
                    moved = str(settings.sweep_dir) + text[len(prefix):]
                    return type(value)(moved) if isinstance(value, PurePath) else moved
        return value

    if old or found:
        _walk(roots, None, fix)
    return changed


def _walk(roots: list[Any], visit, fix=None) -> None:
    """Depth-first over containers and objects with a ``__dict__`` (each once); ``visit``
    sees every value, ``fix`` may replace values held in dicts, lists and attributes."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _ATOMS):
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            items = list(obj.items())
            for key, value in items:
                if fix is not None:
                    new = fix(value)
                    if new is not value:
                        obj[key] = new
                        value = new
                stack.append(value)
        elif isinstance(obj, list):
            for i, value in enumerate(obj):
                if fix is not None:
                    new = fix(value)
                    if new is not value:
                        obj[i] = value = new
                stack.append(value)
        elif isinstance(obj, (tuple, set, frozenset)):
            stack.extend(obj)
        elif _walkable(obj):
            state = vars(obj)
            for key, value in list(state.items()):
                if visit is not None:
                    visit(value)
                if fix is not None:
                    new = fix(value)
                    if new is not value:
                        object.__setattr__(obj, key, new)
                        value = new
                stack.append(value)
        if visit is not None and isinstance(obj, (dict, list, tuple)):
            for value in (obj.values() if isinstance(obj, dict) else obj):
                visit(value)


def _walkable(obj: Any) -> bool:
    """camotune's own objects and Ray Tune's wrappers around them (the concurrency limiter,
    configs); not Optuna studies, Ray internals or anything else."""
    module = type(obj).__module__ or ""
    return hasattr(obj, "__dict__") and not isinstance(obj, type) and (
        # Ray's public configs name their module "ray.tune" (RunConfig, CheckpointConfig)
        module.startswith("camotune.") or module == "ray.tune"
        or module.startswith("ray.tune.search")
        or module.startswith("ray.tune.tune_config") or module.startswith("ray.air.config")
        or module.startswith("ray.tune.impl.config")
        or module.startswith("ray.tune.schedulers"))
