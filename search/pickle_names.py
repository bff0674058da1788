"""The module names under which sweeps started by earlier camotune versions pickled their
scheduler, stopper, callback and tracker into ``tuner.pkl``, mapped to where those classes
live now, so that ``camotune resume`` still restores such a sweep."""

from __future__ import annotations

import importlib
import sys
import types

# old module -> the modules now holding its names
OLD_MODULES: dict[str, tuple[str, ...]] = {
    "camotune.search.stoppers": ("camotune.search.stop_registry", "camotune.search.asha",
                                 "camotune.search.collapse_stopper"),
    "camotune.search.records": ("camotune.search.sweep_callback",),
    "camotune.search.tracking": ("camotune.tracking.sweep_tracker",),
}


def install_old_names() -> None:
    """Register each old module name (unless it exists) as a module holding the names of
    its new modules. Call before unpickling a ``tuner.pkl``."""
    for old, new_modules in OLD_MODULES.items():
        if old in sys.modules:
            continue
        alias = types.ModuleType(old, f"old name of {', '.join(new_modules)} (tuner.pkl)")
        for new in new_modules:
            alias.__dict__.update({k: v for k, v in vars(importlib.import_module(new)).items()
                                   if not k.startswith("__")})
        sys.modules[old] = alias
