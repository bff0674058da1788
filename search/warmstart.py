"""Finished trials of an earlier sweep, in the form the searcher's warm start takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from camotune.search.settings import read_settings
from camotune.sweepdir import TRIALS_FILE, read_events

_STATE = {"completed": "complete", "asha_stopped": "pruned", "collapsed": "pruned",
          "diverged": "pruned", "oom": "fail", "error": "fail"}


def finished_trials(sweep_dir: Path) -> list[dict[str, Any]]:
    """``params``, ``state`` (complete|pruned|fail), ``value`` (best val_iou) and
    ``intermediate`` ({epoch: val_iou}) of every trial that ended in ``sweep_dir``."""
    read_settings(sweep_dir)  # BadInput when it is not a sweep
    params: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[int, float]] = {}
    out = []
    for e in read_events(Path(sweep_dir) / TRIALS_FILE):
        tid = e.get("trial_id")
        if e["event"] == "start":
            params[tid] = e["params"]
        elif e["event"] == "epoch" and e["metrics"].get("val_iou") is not None:
            curves.setdefault(tid, {})[int(e["epoch"])] = float(e["metrics"]["val_iou"])
        elif e["event"] == "end" and tid in params and e.get("stop_reason") in _STATE:
            out.append({"params": params[tid], "state": _STATE[e["stop_reason"]],
                        "value": e.get("best_val_iou"), "intermediate": curves.get(tid, {})})
    return out
