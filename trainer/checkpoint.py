"""Checkpoints: atomic ``last.pt`` every epoch, ``best.pt`` when ``val_iou`` improves, and the
rules for ``--resume-from``.

A checkpoint is a ``torch.save`` dict (see docs/architecture.md): model, EMA, optimizer,
schedule, scaler, epoch, stage, unfreeze level, RNG states and the config. It holds only
tensors, plain containers and primitives (the config as a dict, the NumPy and Python RNG states
as tensors and lists), so it loads with ``torch.load(..., weights_only=True)``: a crafted file
cannot run code. It is written to a temporary file and renamed, so a run killed at any moment
leaves the previous ``last.pt`` whole; a failed write (a full disk) removes the temporary file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import pickle
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camotune.errors import BadInput, JobFailed, excerpt
from camotune.trainer.config import FIELDS, RUNTIME_FIELDS, TrainConfig, flag, from_dict, to_dict

# 2: RNG states as tensors and lists, loadable with weights_only=True (1 held NumPy's tuple).
FORMAT = 2

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors, lists and ints (no pickled objects)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "internal": list(internal),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def prepare_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and parents) and prove it writable by creating and removing a probe
    file. A path that is a file, or a folder that cannot be written, is BadInput naming
    ``--checkpoint-dir``: checked before any data is read or any step is trained."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BadInput(f"--checkpoint-dir {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BadInput(f"--checkpoint-dir {folder} is not writable: "
                       f"{exc.strerror or exc}") from None
    return folder


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` through a temporary file in the same folder and a rename.

    A failed write removes the temporary file; a full disk raises :class:`JobFailed` (reason
    ``disk_full``), other OS errors JobFailed naming the file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with _written(tmp, path):
        torch.save(state, tmp)
        os.replace(tmp, path)


def mark_best(last: str | os.PathLike, best: str | os.PathLike) -> None:
    """Make ``best`` a copy of ``last`` atomically: a hard link where the filesystem allows
    (no bytes copied; the next ``last.pt`` is a new file, so ``best`` keeps its content).
    Failures are handled as in `save_atomic`."""
    last, best = Path(last), Path(best)
    tmp = best.with_name(f".{best.name}.tmp.{os.getpid()}")
    with _written(tmp, best):
        tmp.unlink(missing_ok=True)
        try:
            os.link(last, tmp)
        except OSError:
            shutil.copyfile(last, tmp)
        os.replace(tmp, best)


@contextlib.contextmanager
def _written(tmp: Path, path: Path) -> Iterator[None]:
    """Remove ``tmp`` if the block fails; an OSError becomes one JobFailed line."""
    try:
        yield
    except OSError as exc:
        _cleanup(tmp)
        if exc.errno == errno.ENOSPC:
            raise JobFailed(f"disk full while writing checkpoint {path}: free space in "
                            f"{path.parent}, then resume from its last.pt",
                            reason="disk_full") from None
        raise JobFailed(f"cannot write checkpoint {path}: {exc.strerror or exc}",
                        reason="checkpoint_write") from None
    except BaseException:
        _cleanup(tmp)
        raise


def _cleanup(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError as exc:  # the write already failed; say so rather than hide it
        log.warning("could not remove %s: %s", tmp, exc)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no code in the file can run).

    A missing, damaged or foreign file, or one that holds anything beyond tensors, plain
    containers and primitives (a crafted pickle, or a checkpoint written before format 2), is
    BadInput naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise BadInput(f"cannot read checkpoint {path}: it holds objects other than tensors "
                       "and plain values (a crafted file, or one written by an older "
                       "camotune); refused without running it") from None
    except Exception as exc:  # torch raises many types for a damaged file
        raise BadInput(f"cannot read checkpoint {path}: {type(exc).__name__}") from None
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise BadInput(f"{path} is not a camotune checkpoint")
    return state


def config_of(state: dict[str, Any], source: str = "checkpoint") -> TrainConfig:
    return from_dict(state["config"], source=source)


def resolve_resume(path: str, given: dict[str, Any]) -> TrainConfig:
    """The config of a run resumed from ``path`` with the flags ``given`` on the command line.

    The checkpoint's config is used; given flags must agree with it, except the run-time
    settings (``--num-workers``, ``--device``, ``--threads``, ``--checkpoint-dir``, ...).
    """
    stored = config_of(load(path), source=path)
    for name, value in given.items():
        if name in RUNTIME_FIELDS or name not in FIELDS:
            continue
        if getattr(stored, name) != value:
            raise BadInput(
                f"{flag(name)} {excerpt(value)} differs from the checkpoint's {excerpt(getattr(stored, name))}: "
                "with --resume-from only run-time flags may change")
    runtime = {k: v for k, v in given.items() if k in RUNTIME_FIELDS}
    return dataclasses.replace(stored, **{**runtime, "resume_from": str(path)})


def make_state(*, cfg: TrainConfig, model, ema, optimizer, schedule, scaler, epoch: int,
               stage: int, unfreeze_level: int, best_val_iou: float, best_weights: str,
               metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "config": to_dict(cfg),
        "epoch": epoch,
        "stage": stage,
        "unfreeze_level": unfreeze_level,
        "model": model.state_dict(),
        "ema": ema.module.state_dict() if ema is not None else None,
        "ema_updates": getattr(ema, "updates", 0) if ema is not None else 0,
        "optimizer": optimizer.state_dict(),
        "scheduler": schedule.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "best_val_iou": float(best_val_iou),
        "best_weights": best_weights,
        "metrics": {str(k): _plain(v) for k, v in metrics.items()},
    }


def _plain(value: Any) -> Any:
    """A NumPy scalar (pysodmetrics returns them) -> the Python scalar: weights_only loading
    refuses NumPy objects."""
    if isinstance(value, np.generic):
        return value.item()
    return value
