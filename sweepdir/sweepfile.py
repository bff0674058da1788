"""``sweep.yaml``: a sweep's settings as plain YAML, read and written without Ray.

The typed view (`camotune.search.settings.SweepSettings`) is built on these two functions;
`camotune.results` reads the dict alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from camotune.errors import BadInput
from camotune.sweepdir.layout import SWEEP_FILE
from camotune.yamlfile import read_yaml


def write_settings_dict(sweep_dir: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` as ``<sweep_dir>/sweep.yaml`` atomically (a temporary file, then
    ``os.replace``); keys keep their order. Returns the file's path."""
    import yaml

    path = Path(sweep_dir) / SWEEP_FILE
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)
    return path


def read_settings_dict(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    """``sweep.yaml`` as a dict; BadInput (exit 2) for a folder that is not a sweep, and for
    a binary, non-UTF-8, malformed or oversized file (read with `camotune.yamlfile`)."""
    folder = Path(sweep_dir)
    if not folder.is_dir():
        raise BadInput(f"not a folder: {folder}")
    path = folder / SWEEP_FILE
    if not path.is_file():
        raise BadInput(f"{folder} is not a camotune sweep (no {SWEEP_FILE})")
    data = read_yaml(path, plain_floats=False)  # bounded; binary or non-UTF-8 is BadInput
    if not isinstance(data, dict) or not isinstance(data.get("space"), dict) \
            or not isinstance(data.get("base"), dict):
        raise BadInput(f"{path}: not a camotune sweep file")
    return data
