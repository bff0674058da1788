"""One command at a time on a sweep folder: ``sweep``, ``resume`` and ``confirm`` hold its lock.

The lock is ``<sweep>/.lock`` (a `filelock.FileLock`: an OS lock, released by the kernel when
its holder dies) with ``<sweep>/.lock.holder`` beside it: one JSON line with the holder's
host, pid, command and start time. A second command on the same folder gets `BadInput`
(exit 2) naming the holder. A holder file left by a process that is dead on this host (the
OS lock is gone with it, but a hard kill leaves the file) is taken over with a warning;
on a shared file system an OS lock held from another host still wins.

Other commands that write into a sweep folder (``camotune sync``, ``camotune why``) take the
same lock with ``with locked(sweep_dir, "sync"): ...``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from camotune.errors import BadInput

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
HOLDER_FILE = ".lock.holder"


def holder(sweep_dir: str | os.PathLike) -> dict[str, Any] | None:
    """What ``.lock.holder`` says (host, pid, command, since), None without a readable one."""
    try:
        data = json.loads((Path(sweep_dir) / HOLDER_FILE).read_text(errors="replace")[:4096])
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive_here(info: dict[str, Any]) -> bool:
    """Whether the holder is a live process on this host (unknown hosts count as alive)."""
    if info.get("host") != socket.gethostname():
        return True
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(info: dict[str, Any] | None) -> str:
    """``camotune resume (pid 123 on host h, since 2026-...)`` for a message."""
    if not info:
        return "another process (no holder recorded)"
    return (f"`camotune {info.get('command', '?')}` (pid {info.get('pid', '?')} on host "
            f"{info.get('host', '?')}, since {info.get('since', '?')})")


@contextlib.contextmanager
def locked(sweep_dir: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold ``sweep_dir``'s lock for ``command`` (``"resume"``, ``"sync"``, ...) meanwhile.

    The folder must exist. Raises `BadInput` at once when another live process holds it,
    naming it; a lock left by a dead process on this host is taken over with a warning. The
    holder file is removed on exit; the lock file stays (removing it would race)."""
    from filelock import FileLock, Timeout

    folder = Path(sweep_dir)
    if not folder.is_dir():
        raise BadInput(f"not a folder: {folder}")
    lock = FileLock(str(folder / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise BadInput(f"{folder} is in use by {describe(holder(folder))}: wait for it to "
                       "end, or stop it") from None
    except OSError as exc:
        raise BadInput(f"{folder}: cannot lock the sweep folder ({exc.strerror or exc})") \
            from None
    try:
        previous = holder(folder)
        if previous is not None:
            state = "dead" if not _alive_here(previous) else "gone (its lock was free)"
            log.warning("%s: taking over the lock of %s, %s", folder, describe(previous), state)
        _write_holder(folder, command)
        yield
    finally:
        with contextlib.suppress(OSError):
            (folder / HOLDER_FILE).unlink()
        lock.release()


def _write_holder(folder: Path, command: str) -> None:
    info = {"host": socket.gethostname(), "pid": os.getpid(), "command": command,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "time": time.time()}
    tmp = folder / (HOLDER_FILE + ".tmp")
    tmp.write_text(json.dumps(info) + "\n")
    os.replace(tmp, folder / HOLDER_FILE)
