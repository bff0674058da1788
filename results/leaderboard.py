"""The leaderboard of a sweep: trials best first, counts per stop reason, compute used.

Formats: ``table`` (for people), ``csv`` (one row per trial, flat columns), ``json`` (a list
with one object per trial with ``trial_id``, ``stop_reason``, ``rung``, ``epochs``,
``best_val_iou``, ``last_val_iou``, ``val_iou_history``, ``compute_seconds`` with
``compute_unit`` (gpu or cpu), ``config``, ``lr_stage1``, ``lr_stage2`` and the other columns of
`camotune.results.read`; ``gpu_seconds`` is a deprecated alias of ``compute_seconds``, kept for
one release).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from camotune.results.read import UNFINISHED, Sweep

# Columns never written to the CSV or JSON: per-epoch rows are history.csv's job.
_INTERNAL = ("history", "started")


def ranked(sweep: Sweep) -> pd.DataFrame:
    """The trials sorted by ``best_val_iou``, best first; trials without one last (in start
    order). Adds ``rank`` (1 = best; None for trials without a val_iou)."""
    df = sweep.trials.sort_values("best_val_iou", ascending=False, na_position="last",
                                  kind="stable").reset_index(drop=True)
    has = df["best_val_iou"].notna()
    df.insert(0, "rank", pd.array([i + 1 if ok else None for i, ok in enumerate(has)],
                                  dtype="Int64"))
    return df


def counts(sweep: Sweep) -> dict[str, int]:
    """Trials per stop reason (``running``, ``interrupted``, ``orphaned`` included)."""
    return {str(k): int(v) for k, v in sweep.trials["stop_reason"].value_counts().items()}


def compute(sweep: Sweep) -> dict[str, float]:
    """Compute used against running every trial to the end, in GPU-seconds (CPU-seconds
    without a GPU): ``used``; ``full``, the estimate of running every trial to max_epochs
    (each trial's cost per epoch so far, its start-up included, x max_epochs; trials that ran
    no epoch count as they are); ``saved_fraction`` (1 - used/full), NaN when full is 0 or
    while trials are unfinished (their remaining epochs are not saved, only not run yet);
    ``unfinished`` (trials running, interrupted or orphaned).
    """
    df = sweep.trials
    used = float(df["compute_seconds"].fillna(0.0).sum())
    per_epoch = df["seconds_per_epoch"]
    full = float(np.where(per_epoch.notna(), per_epoch * sweep.max_epochs,
                          df["compute_seconds"].fillna(0.0)).sum())
    unfinished = int(df["stop_reason"].isin(UNFINISHED).sum())
    saved = 1.0 - used / full if full > 0 and not unfinished else math.nan
    return {"used": used, "full": full, "saved_fraction": saved, "unfinished": unfinished}


def summary(sweep: Sweep) -> dict[str, Any]:
    """What a caller (``camotune sweep``) reports: ``trials``, ``finished`` (trials that
    produced a val_iou), ``best_trial_id``, ``best_val_iou`` (None without any), ``counts``,
    ``compute``."""
    df = ranked(sweep)
    finished = int(df["best_val_iou"].notna().sum())
    best = df.iloc[0] if finished else None
    return {"sweep": sweep.name, "trials": len(df), "finished": finished,
            "best_trial_id": None if best is None else best["trial_id"],
            "best_val_iou": None if best is None else float(best["best_val_iou"]),
            "counts": counts(sweep), "compute": compute(sweep)}


def _plain(value: Any) -> Any:
    """JSON-safe: NumPy scalars to Python, NaN to None, lists and dicts recursively."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if _missing(value) or value is pd.NaT:
        return None
    return value


def records(sweep: Sweep) -> list[dict[str, Any]]:
    """The JSON leaderboard: one object per trial, best first (see the module docstring)."""
    df = ranked(sweep).drop(columns=list(_INTERNAL))
    return [_plain(row) for row in df.to_dict(orient="records")]


def to_json(sweep: Sweep) -> str:
    return json.dumps(records(sweep), indent=2, allow_nan=False)


def to_csv(sweep: Sweep) -> str:
    """One row per trial, best first; the history as ``;``-joined values, the config as JSON."""
    df = ranked(sweep).drop(columns=list(_INTERNAL))
    df["val_iou_history"] = df["val_iou_history"].map(
        lambda h: ";".join("" if v is None else repr(v) for v in h))
    df["config"] = df["config"].map(lambda c: json.dumps(c, sort_keys=True))
    return df.to_csv(index=False)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _fmt(value: Any, spec: str = ".4f") -> str:
    if _missing(value):
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)):
        return format(float(value), spec) if spec else f"{float(value):.4g}"
    return str(value)


def to_table(sweep: Sweep) -> str:
    """A human-readable leaderboard with a header of counts and compute used."""
    df = ranked(sweep)
    cols = ["rank", "trial_id", "stop_reason", "rung", "epochs", "best_val_iou",
            "last_val_iou", "compute_seconds", *sweep.params, "lr_stage1", "lr_stage2"]
    gpu = float(sweep.settings.get("gpus_per_trial") or 0) > 0
    # the header says what the seconds count: GPU-seconds, or CPU-seconds without a GPU
    cells = [[("gpu_seconds" if gpu else "cpu_seconds") if c == "compute_seconds" else c
              for c in cols]]
    for _, row in df.iterrows():
        line = []
        for c in cols:
            if c in ("best_val_iou", "last_val_iou"):
                line.append(_fmt(row[c]))
            elif c == "compute_seconds":
                line.append(_fmt(row[c], ".0f"))
            elif c in ("rung", "rank", "epochs"):
                line.append("-" if _missing(row[c]) else str(int(row[c])))
            else:
                line.append(_fmt(row[c], ""))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
            for r in cells]
    c = compute(sweep)
    reasons = ", ".join(f"{k} {v}" for k, v in counts(sweep).items()) or "none"
    unit = "GPU-s" if gpu else "CPU-s"
    if c["unfinished"]:
        tail_text = f" ({c['unfinished']} trial(s) not finished yet)"
    elif math.isnan(c["saved_fraction"]):
        tail_text = ""
    else:
        tail_text = f" (saved {100 * c['saved_fraction']:.0f}%)"
    head = [f"sweep {sweep.name}: {len(df)} trials ({reasons}); max_epochs {sweep.max_epochs}",
            f"compute used {c['used']:.0f} {unit}; every trial run to the end: "
            f"~{c['full']:.0f} {unit}{tail_text}", ""]
    return "\n".join(head + body)
