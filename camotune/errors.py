"""The two failure kinds every command maps to an exit code.

``BadInput`` (exit 2) is the caller's mistake: a bad flag, a missing path, a malformed file.
``JobFailed`` (exit 1) means the job ran and failed: training diverged, ran out of memory,
a diagnose check failed. Both carry a one-line message; the CLI prints it without a traceback.
"""

from __future__ import annotations


class BadInput(Exception):
    """Bad input from the user: exit code 2, one line on stderr."""

    exit_code = 2


class JobFailed(Exception):
    """The job ran and failed: exit code 1. ``reason`` is a stop reason (diverged, oom, ...)."""

    exit_code = 1

    def __init__(self, message: str, *, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason
