"""Checkpoint files written off the training loop's critical path.

`CheckpointWriter.submit` copies a checkpoint state to CPU memory on the calling thread (a
memory copy, so training may go on changing the live tensors at once), then writes the files
in one background thread: ``last.pt`` atomically (`checkpoint.save_atomic`), and ``best.pt``
as a hard link of it (`checkpoint.mark_best`) or, when ``last.pt`` is not written that epoch,
as a file of its own. One write at a time: a new submit first waits for the previous write, and
an error of a write is raised on the training thread by the next `submit` or by `close`.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from camotune.trainer import checkpoint as ckpt

log = logging.getLogger(__name__)


def cpu_copy(obj: Any) -> Any:
    """``obj`` with every tensor in its dicts, lists and tuples replaced by a detached CPU copy
    (other values are kept as they are: the state's numbers, strings and RNG tuples)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [cpu_copy(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(cpu_copy(v) for v in obj)
    return obj


def _write(state: dict[str, Any], last: Path | None, best: Path | None) -> None:
    if last is not None:
        ckpt.save_atomic(state, last)
    if best is not None:
        if last is not None:
            ckpt.mark_best(last, best)
        else:
            ckpt.save_atomic(state, best)


class CheckpointWriter:
    """Writes checkpoint states in a background thread, one at a time (see the module)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="camotune-checkpoint")
        self._pending: Future | None = None

    def submit(self, state: dict[str, Any], *, last: Path | None = None,
               best: Path | None = None) -> None:
        """Write ``state`` to ``last`` and/or ``best`` in the background. Waits for the previous
        write first (and raises its error, if it failed)."""
        self.wait()
        if last is None and best is None:
            return
        self._pending = self._pool.submit(_write, cpu_copy(state), last, best)

    def wait(self) -> None:
        """Block until the pending write is on disk; re-raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self, *, quiet: bool = False) -> None:
        """Finish the pending write and stop the thread. With ``quiet`` (the run is already
        failing with another error) a write error is logged instead of raised."""
        try:
            self.wait()
        except Exception as exc:
            if not quiet:
                raise
            log.error("checkpoint write failed while the run was ending: %s: %s",
                      type(exc).__name__, exc)
        finally:
            self._pool.shutdown(wait=True)
