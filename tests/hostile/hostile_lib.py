"""Shared by the hostile-input tests: every case must end in one stderr line and the
documented exit code, quickly, with nothing run that the input asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"


def one_line(err: str) -> str:
    """The single line of ``err`` (asserting there is exactly one and no traceback)."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err[-2000:]
    assert "Traceback" not in err
    return lines[0]


def camotune(*args: str, cwd: Path | None = None, timeout: float = 60,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed command line (``python -m camotune``) in a fresh process."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "camotune", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def error_line(err: str) -> str:
    """The one ``camotune ...: error: ...`` line of ``err`` (log lines may precede it; no
    traceback)."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err[-2000:]
    return lines[0]
