"""Append-only JSON-lines events: the format of ``trials.jsonl``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def append_event(path: Path, event: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk (a crash loses at most the line in flight)."""
    line = json.dumps({"time": time.time(), **event}, default=_json_default, allow_nan=True)
    with path.open("a") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def read_events(path: Path) -> list[dict[str, Any]]:
    """Events of a trials.jsonl; a torn last line (crash mid-write) is skipped."""
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events
