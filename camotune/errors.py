"""The two failure kinds every command maps to an exit code.

``BadInput`` (exit 2) is the caller's mistake: a bad flag, a missing path, a malformed file.
``JobFailed`` (exit 1) means the job ran and failed: training diverged, ran out of memory,
a diagnose check failed. Both carry a one-line message; the CLI prints it without a traceback.
"""

from __future__ import annotations

import reprlib
from typing import Any

_REPR = reprlib.Repr()  # keyword arguments need Python 3.12
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60
_REPR.maxtuple = _REPR.maxlist = _REPR.maxdict = _REPR.maxset = 4
EXCERPT_CHARS = 80


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` bounded to ``limit`` characters (nested containers cut at three levels),
    for messages that quote what the user gave: a huge or deeply nested value stays one short
    line and costs no time to format."""
    return _cut(_REPR.repr(value), limit)


def clip(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """``str(value)`` bounded to ``limit`` characters: for keys quoted in a message path
    (``params.<key>``); a key with a newline or other control characters is quoted."""
    text = str(value)
    return _cut(text if text.isprintable() else repr(text), limit)  # a newline stays "\n"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BadInput(Exception):
    """Bad input from the user: exit code 2, one line on stderr."""

    exit_code = 2


class JobFailed(Exception):
    """The job ran and failed: exit code 1. ``reason`` is a stop reason (diverged, oom, ...)."""

    exit_code = 1

    def __init__(self, message: str, *, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason
