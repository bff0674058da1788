"""Append-only JSON-lines events: the format of ``trials.jsonl``."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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
    """Events of a trials.jsonl in file order. A line that is not a JSON event (a torn last
    line after a crash, bytes that are not UTF-8) or whose ``trial_id`` is not a string is
    skipped with a warning; a missing file has no events."""
    if not path.is_file():
        return []
    events = []
    lines = path.read_bytes().splitlines()
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError is a ValueError
            log.warning("%s: line %d of %d is not JSON (torn write?): skipped", path, i + 1,
                        len(lines))
            continue
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            continue
        if event.get("trial_id") is not None and not isinstance(event["trial_id"], str):
            log.warning("%s: line %d of %d has a trial_id that is not a string: skipped", path,
                        i + 1, len(lines))
            continue
        events.append(event)
    return events
