"""Read a sweep folder into pandas: ``sweep.yaml``, ``trials.jsonl`` and each trial's history.

Only camotune's own files are read (never Ray's), so this works while a sweep runs, after the
driver crashed (a torn last line of ``trials.jsonl`` is skipped) and without MLflow.

One row per trial. Its record is its latest ``start`` event (a resumed sweep starts a trial
again) and the first ``end``, ``interrupted`` or ``orphaned`` event after it; ``stop_reason``
is the end's reason, or ``running`` (no such event yet), ``interrupted`` (stopped by a time
budget or Ctrl-C: it continues on resume) or ``orphaned`` (Ray will not restore it).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from camotune.sweepdir import TRIALS_FILE, read_events, read_settings_dict
from camotune.trainer.history import METRIC_KEYS, read_history

log = logging.getLogger(__name__)

UNFINISHED = ("running", "interrupted", "orphaned")
# Validation metrics given at the epoch of the best val_iou as ``<key>_at_best``.
VAL_KEYS = tuple(k for k in METRIC_KEYS if k.startswith("val_") and k != "val_iou")
# Metrics given as ``last_<key>``: the last value recorded (some are computed every N epochs).
LAST_KEYS = tuple(k for k in METRIC_KEYS if k not in ("epoch", "stage", "val_iou", "best_val_iou"))


@dataclass(frozen=True)
class Sweep:
    """A sweep folder as read now.

    ``settings`` is ``sweep.yaml`` as a plain dict (``SweepSettings.to_dict()``: ``space``,
    ``base``, ``scheduler``, ``grace_period``, ``reduction_factor``, ``max_epochs``, ...).
    ``trials`` has one row per trial in start order (see `trials_frame` for the columns);
    ``params`` names the searched fields, which are columns of ``trials`` too.
    """

    path: Path
    settings: dict[str, Any]
    trials: pd.DataFrame
    params: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def max_epochs(self) -> int:
        return int(self.settings.get("max_epochs") or self.settings["base"]["epochs"])

    @property
    def design(self) -> dict[str, Any] | None:
        """The factorial design of the space (``levels``, ``fraction``, ``repeats``) or None."""
        return self.settings["space"].get("design")

    def rungs(self) -> list[int]:
        """ASHA rung epochs: the sweep's ``rungs``, else ``grace_period * reduction_factor**k
        <= max_epochs``; [] for FIFO."""
        if self.settings.get("scheduler") != "asha":
            return []
        if self.settings.get("rungs"):
            return [int(r) for r in self.settings["rungs"] if int(r) <= self.max_epochs]
        grace, factor = int(self.settings["grace_period"]), int(self.settings["reduction_factor"])
        out, t = [], grace
        while t <= self.max_epochs:
            out.append(t)
            t *= factor
        return out


def load_sweep(sweep_dir: str | os.PathLike) -> Sweep:
    """Read a sweep folder: settings, and one row per trial with its history.

    BadInput when the folder is not a sweep. A sweep with no trial yet has an empty table (with
    the columns). Trials whose ``history.csv`` is missing (another node's disk, deleted) take
    their per-epoch values from the ``epoch`` events of ``trials.jsonl``.
    """
    folder = Path(sweep_dir)
    settings = read_settings_dict(folder)
    events = read_events(folder / TRIALS_FILE)
    space = settings["space"]
    if space.get("design"):
        params = tuple(space["design"]["levels"])
        if int(space["design"].get("repeats", 1)) > 1:
            params += ("seed",)
    else:
        params = tuple(space.get("params") or {})
    frame = trials_frame(folder, events, params)
    return Sweep(path=folder, settings=settings, trials=frame, params=params)


def _group(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """trial_id -> {"start", "stop" (end/interrupted/orphaned after it), "epochs" {n: event}}."""
    out: dict[str, dict[str, Any]] = {}
    for event in events:
        tid = event.get("trial_id")
        if tid is None:
            continue
        kind = event["event"]
        rec = out.setdefault(tid, {"start": None, "stop": None, "epochs": {}})
        if kind == "start":
            # A trial ends once: a later start (Ray restoring it from a state saved before its
            # end) keeps the end.
            ended = rec["stop"] is not None and rec["stop"]["event"] == "end"
            rec["start"], rec["stop"] = event, rec["stop"] if ended else None
        elif kind == "epoch" and isinstance(event.get("epoch"), int):
            rec["epochs"][event["epoch"]] = event  # a resumed trial redoes epochs: last wins
        elif kind in ("end", "interrupted", "orphaned") and (
                rec["stop"] is None or (kind == "end" and rec["stop"]["event"] != "end")):
            rec["stop"] = event
    return {tid: rec for tid, rec in out.items() if rec["start"] is not None}


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _history(folder: Path, rec: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the trial's history.csv, else its epoch events; cut at the end's epoch count
    (an epoch may finish after the driver decided to stop the trial)."""
    trial_dir = folder / rec["start"].get("trial_dir", f"trials/{rec['start']['trial_id']}")
    rows = read_history(trial_dir / "history.csv")
    if not rows:
        rows = [dict(e.get("metrics") or {}, epoch=n) for n, e in sorted(rec["epochs"].items())]
    stop = rec["stop"]
    if stop is not None and stop["event"] == "end" and stop.get("epochs"):
        rows = [r for r in rows if int(r.get("epoch") or 0) <= int(stop["epochs"])]
    return sorted(rows, key=lambda r: int(r.get("epoch") or 0))


def _row(folder: Path, tid: str, rec: dict[str, Any], params: tuple[str, ...]) -> dict[str, Any]:
    start, stop = rec["start"], rec["stop"]
    history = _history(folder, rec)
    ious = [_num(r.get("val_iou")) for r in history]
    valid = [(v, i) for i, v in enumerate(ious) if v is not None]
    best_i = max(valid, key=lambda t: (t[0], -t[1]))[1] if valid else None
    if stop is None:
        status = "running"
    elif stop["event"] == "end":
        status = stop.get("stop_reason") or "error"
    else:
        status = stop["event"]
    resources = start.get("resources") or {}
    # as the driver counts it: GPUs (else CPUs) per worker x workers x wall seconds
    unit = "gpu" if float(resources.get("gpu") or 0.0) > 0 else "cpu"
    share = float(resources.get("gpu") or resources.get("cpu") or 1.0) \
        * int(resources.get("workers") or 1)
    recorded = None if stop is None or stop["event"] != "end" else \
        next((stop[k] for k in ("compute_seconds", "gpu_seconds") if stop.get(k) is not None),
             None)
    if recorded is not None:
        compute_seconds = float(recorded)
    else:
        seen = [float(e.get("seconds") or 0.0) for e in rec["epochs"].values()]
        if stop is not None and stop.get("seconds") is not None:
            seen.append(float(stop["seconds"]))
        compute_seconds = share * max(seen, default=0.0)
    epochs = len(history)
    if stop is not None and stop["event"] == "end" and not history:
        epochs = int(stop.get("epochs") or 0)
    best = ious[best_i] if best_i is not None else _num((stop or {}).get("best_val_iou"))
    row: dict[str, Any] = {
        "trial_id": tid,
        "stop_reason": status,
        "rung": (stop or {}).get("rung"),
        "epochs": epochs,
        "best_val_iou": best,
        "best_epoch": int(history[best_i]["epoch"]) if best_i is not None else None,
        "last_val_iou": ious[-1] if ious else _num((stop or {}).get("last_val_iou")),
        "val_iou_history": ious,
        "compute_seconds": compute_seconds,
        "compute_unit": unit,
        "gpu_seconds": compute_seconds,  # deprecated alias of compute_seconds (one release)
        "seconds_per_epoch": compute_seconds / epochs if epochs else None,
        "lr_stage1": start.get("lr_stage1"),
        "lr_stage2": start.get("lr_stage2"),
        "message": (stop or {}).get("message") or "",
        "restored": bool(start.get("restored")),
        "trial_dir": start.get("trial_dir", ""),
        "started": start.get("time"),
    }
    config = start.get("config") or {}
    for p in params:
        row[p] = start.get("params", {}).get(p, config.get(p))
    for k in VAL_KEYS:
        row[f"{k}_at_best"] = _num(history[best_i].get(k)) if best_i is not None else None
    for k in LAST_KEYS:
        values = [_num(r.get(k)) for r in history]
        row[f"last_{k}"] = next((v for v in reversed(values) if v is not None), None)
    row["history"] = history
    row["config"] = config
    return row


def trials_frame(folder: Path, events: list[dict[str, Any]],
                 params: tuple[str, ...]) -> pd.DataFrame:
    """One row per started trial, in start order. Columns: ``trial_id``, ``stop_reason``
    (status, see the module docstring), ``rung``, ``epochs`` (epochs run), ``best_val_iou``,
    ``best_epoch``, ``last_val_iou``, ``val_iou_history`` (list, one value or None per epoch),
    ``compute_seconds`` (GPUs, else CPUs, x workers x wall seconds; so far for an unfinished
    trial), ``compute_unit`` (``gpu`` or ``cpu``: what ``compute_seconds`` counts),
    ``gpu_seconds`` (deprecated: the same figure under its old name, also on a CPU-only run;
    removed in the next release), ``seconds_per_epoch``, ``lr_stage1``, ``lr_stage2``, ``message``, ``restored``,
    ``trial_dir``, ``started``, one column per searched param, ``<val key>_at_best`` (the
    validation metrics at the best epoch), ``last_<key>`` (the last value recorded of each other
    metric), ``history`` (the rows, list of dicts) and ``config`` (the complete TrainConfig
    dict). Missing values are None/NaN.
    """
    rows = [_row(folder, tid, rec, params) for tid, rec in _group(events).items()]
    columns = ["trial_id", "stop_reason", "rung", "epochs", "best_val_iou", "best_epoch",
               "last_val_iou", "val_iou_history", "compute_seconds", "compute_unit",
               "gpu_seconds", "seconds_per_epoch",
               "lr_stage1", "lr_stage2", "message", "restored", "trial_dir", "started",
               *params, *(f"{k}_at_best" for k in VAL_KEYS), *(f"last_{k}" for k in LAST_KEYS),
               "history", "config"]
    frame = pd.DataFrame(rows, columns=columns)
    for col in ("best_val_iou", "last_val_iou", "compute_seconds", "gpu_seconds",
                "seconds_per_epoch"):
        frame[col] = pd.to_numeric(frame[col]).astype(float)
    for col in ("rung", "best_epoch", "epochs"):
        frame[col] = pd.to_numeric(frame[col]).astype("Int64")  # integers with missing values
    return frame
