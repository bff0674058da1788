"""The K-th best trial of a sweep as a whole `TrainConfig`: a ``camotune train`` line, YAML
or JSON.

The exported config is the trial's own (base + the space's fixed values + its params, the
epochs of a full run, its seed and ``--threads``: on the CPU a run reproduces the trial's
history exactly only with the same thread count) with a fresh ``--checkpoint-dir`` under the
sweep folder, ``<sweep>/exports/<trial_id>-rank<K>`` (``-2``, ``-3``, ... when that folder
exists already), so running the line never overwrites the trial's own files.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any

import pandas as pd

from camotune.errors import BadInput
from camotune.results.leaderboard import ranked
from camotune.results.read import Sweep
from camotune.trainer.config import TrainConfig, dump_yaml, from_dict, to_argv, to_dict

EXPORTS_DIR = "exports"
# Always on the exported line, even when equal to the default: what a reader must see.
KEEP_FLAGS = ("dataset_path", "epochs", "seed", "threads", "checkpoint_dir")
FORMATS = ("cli", "yaml", "json")


def pick(sweep: Sweep, rank: int = 1) -> pd.Series:
    """The trial at ``rank`` (1 = best) among the trials with a ``best_val_iou``.

    BadInput when ``rank`` < 1 or no such trial exists (the message says how many there are).
    """
    if rank < 1:
        raise BadInput(f"--rank must be >= 1 (got {rank})")
    df = ranked(sweep)
    df = df[df["best_val_iou"].notna()]
    if len(df) < rank:
        have = f"only {len(df)} trial(s) have" if len(df) else "no trial has"
        raise BadInput(f"--rank {rank}: {have} a val_iou in {sweep.path}")
    return df.iloc[rank - 1]


def export_dir(sweep: Sweep, trial_id: str, rank: int) -> Path:
    """``<sweep>/exports/<trial_id>-rank<K>``, or the first ``-2``, ``-3``... that does not
    exist yet. Nothing is created."""
    base = sweep.path.resolve() / EXPORTS_DIR / f"{trial_id}-rank{rank}"
    path, n = base, 2
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path


def exported_config(sweep: Sweep, rank: int = 1) -> tuple[TrainConfig, pd.Series]:
    """The config to run for the trial at ``rank``, and that trial's row."""
    row = pick(sweep, rank)
    config: dict[str, Any] = dict(row["config"] or {})
    if not config:
        raise BadInput(f"{sweep.path}: trial {row['trial_id']} has no recorded config")
    cfg = from_dict(config, source=f"{sweep.path}/trials.jsonl ({row['trial_id']})")
    out = export_dir(sweep, str(row["trial_id"]), rank)
    cfg = dataclasses.replace(cfg, checkpoint_dir=str(out), resume_from="")
    return cfg, row


def command_line(cfg: TrainConfig) -> str:
    """One ``camotune train ...`` line: the kept flags and every flag differing from the
    defaults, shell-quoted."""
    return shlex.join(["camotune", "train", *to_argv(cfg, minimal=True, keep=KEEP_FLAGS)])


def render(cfg: TrainConfig, fmt: str) -> str:
    """``cli``: the command line; ``yaml``/``json``: every field (``from_dict`` loads it)."""
    if fmt == "cli":
        return command_line(cfg)
    if fmt == "yaml":
        return dump_yaml(cfg).rstrip("\n")
    if fmt == "json":
        return json.dumps(to_dict(cfg), indent=2)
    raise BadInput(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
