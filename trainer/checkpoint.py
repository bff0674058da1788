"""Checkpoints: atomic ``last.pt`` every epoch, ``best.pt`` when ``val_iou`` improves, and the
rules for ``--resume-from``.

A checkpoint is a ``torch.save`` dict (see docs/architecture.md): model, EMA, optimizer,
schedule, scaler, epoch, stage, unfreeze level, RNG states and the config. It is written to a
temporary file and renamed, so a run killed at any moment leaves the previous ``last.pt`` whole.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camotune.errors import BadInput
from camotune.trainer.config import FIELDS, RUNTIME_FIELDS, TrainConfig, flag, from_dict, to_dict

FORMAT = 1


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def mark_best(last: str | os.PathLike, best: str | os.PathLike) -> None:
    """Make ``best`` a copy of ``last`` atomically: a hard link where the filesystem allows
    (no bytes copied; the next ``last.pt`` is a new file, so ``best`` keeps its content)."""
    last, best = Path(last), Path(best)
    tmp = best.with_name(f".{best.name}.tmp.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(last, tmp)
    except OSError:
        shutil.copyfile(last, tmp)
    os.replace(tmp, best)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint; a missing or unreadable file is BadInput naming it."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
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
                f"{flag(name)} {value!r} differs from the checkpoint's {getattr(stored, name)!r}: "
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
        "best_val_iou": best_val_iou,
        "best_weights": best_weights,
        "metrics": dict(metrics),
    }
