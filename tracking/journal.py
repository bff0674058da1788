"""The sweep folder's journal of tracking calls that could not be sent: ``tracking_pending.jsonl``.

Append-only JSON lines. A call is ``{"key": ..., "what": ..., "op": {...}}``: ``key`` is the
call's idempotency key (fixed when the call is made, the same on every retry), ``op`` a plain
description of the MLflow call that `camotune.tracking.replay` can send from any process (it
names its run by camotune's run key, not by an MLflow run id, which may not exist yet). A call
sent later is marked by a line ``{"sent": key}``; nothing is ever rewritten in place, so a
crash at any point leaves a journal that is still read correctly (a torn last line is ignored).

The calls still to send are those without a ``sent`` line, in the order they were made.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JOURNAL_FILE = "tracking_pending.jsonl"


def new_key() -> str:
    """A fresh idempotency key for one call."""
    return uuid.uuid4().hex


class Journal:
    """The journal of one sweep folder; safe to use from several threads of one process."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._journaled: set[str] = set()

    def add(self, key: str, what: str, op: dict[str, Any]) -> None:
        """Append one unsent call (once per key)."""
        with self._lock:
            if key in self._journaled:
                return
            self._journaled.add(key)
            self._write({"key": key, "what": what, "op": op})

    def mark_sent(self, key: str) -> None:
        """Record that call ``key`` reached the tracking store."""
        with self._lock:
            self._write({"sent": key})

    def has(self, key: str) -> bool:
        return key in self._journaled

    def unsent(self) -> list[dict[str, Any]]:
        """The calls without a ``sent`` line, oldest first (``[]`` without a journal)."""
        with self._lock:
            entries, sent = [], set()
            for record in _records(self.path):
                if "sent" in record:
                    sent.add(record["sent"])
                elif isinstance(record.get("op"), dict) and record.get("key"):
                    entries.append(record)
        seen: set[str] = set()
        out = []
        for entry in entries:
            if entry["key"] not in sent and entry["key"] not in seen:
                seen.add(entry["key"])
                out.append(entry)
        return out

    def count_unsent(self) -> int:
        return len(self.unsent())

    def _write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
            out.flush()


def _records(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line torn by a crash mid-write
            continue
        if isinstance(record, dict):
            out.append(record)
    return out
