"""A `camotune why` sweep folder -> the trial table and report of :mod:`.report`.

``why.yaml`` in the sweep folder holds what the design was built from (the good and the bad
config, already shortened and with the common flags, the seeds, the groups, the run budget);
the design is rebuilt from it with `design_pair`, so the factors and their coding are the ones
the sweep ran. A fold-over (``camotune why --fold-over``) is a second sweep in the folder's
``foldover/`` subfolder; its trials join the table.

Responses, one row per trial (a trial that did not reach the analysed epoch has NaN, never a
substitute):

- ``final_iou``: the objective ``val_iou`` at the design's last epoch;
- ``iou_epoch<K>``: ``val_iou`` at epoch K (``at_epoch``);
- ``collapsed``: 1 when the post-hoc label (`camotune.results.collapse.outcome_labels`: the
  stop reason, with trials that ended all background labelled collapsed) is ``collapsed`` or
  ``diverged``, 0 for a trial that completed every epoch otherwise, NaN while unfinished.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from camotune.errors import BadInput
from camotune.results.attribution import FAILED_AS_ZERO
from camotune.results.collapse import outcome_labels
from camotune.results.read import UNFINISHED, load_sweep
from camotune.spaces.design import Design
from camotune.spaces.pair import Factor
from camotune.spaces.pair_design import PairDesign, design_pair
from camotune.trainer.config import from_dict, to_dict

from .report import why_report

__all__ = ["FOLDOVER_DIR", "WHY_FILE", "design_sweep_report", "is_why_sweep", "read_why",
           "response_names", "trial_table", "why_sweep_report", "write_why"]

WHY_FILE = "why.yaml"
FOLDOVER_DIR = "foldover"


def write_why(sweep_dir: str | os.PathLike, pair: PairDesign, *, max_runs: int,
              group: Sequence[Sequence[str]], at_epoch: int | None,
              fold_over: bool = False) -> Path:
    """Write ``why.yaml``: the inputs `read_why` rebuilds the design from, plus its summary
    (for people; the rebuilt design is what counts)."""
    data = {
        "good": to_dict(pair.good), "bad": to_dict(pair.bad),
        "seeds": list(pair.seeds), "max_runs": max_runs,
        "group": [list(g) for g in group], "at_epoch": at_epoch, "fold_over": fold_over,
        "summary": pair.summary(),
    }
    path = Path(sweep_dir) / WHY_FILE
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def is_why_sweep(sweep_dir: str | os.PathLike) -> bool:
    return (Path(sweep_dir) / WHY_FILE).is_file()


def read_why(sweep_dir: str | os.PathLike) -> tuple[PairDesign, dict[str, Any]]:
    """The design of a `camotune why` sweep and the raw ``why.yaml`` mapping."""
    path = Path(sweep_dir) / WHY_FILE
    if not path.is_file():
        raise BadInput(f"{sweep_dir}: not a `camotune why` sweep (no {WHY_FILE})")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not {"good", "bad", "seeds"} <= set(data):
        raise BadInput(f"{path}: expected good, bad and seeds")
    good = from_dict(data["good"], source=f"{path}: good")
    bad = from_dict(data["bad"], source=f"{path}: bad")
    pair = design_pair(good, bad, seeds=data["seeds"], max_runs=int(data.get("max_runs") or 64),
                       group=[tuple(g) for g in data.get("group") or []])
    return pair, data


def response_names(at_epoch: int | None) -> list[str]:
    return ["final_iou", *([f"iou_epoch{at_epoch}"] if at_epoch else []), "collapsed"]


def _coded(config: dict[str, Any], factors: Sequence[Factor]) -> dict[str, int] | None:
    out = {}
    for f in factors:
        values = tuple(config.get(name) for name in f.fields)
        if _same(values, f.good):
            out[f.name] = -1
        elif _same(values, f.bad):
            out[f.name] = 1
        else:
            return None
    return out


def _same(a: Sequence[Any], b: Sequence[Any]) -> bool:
    for x, y in zip(a, b, strict=True):
        if isinstance(y, float) and isinstance(x, (int, float)) and not isinstance(x, bool):
            if not math.isclose(float(x), y, rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif x != y:
            return False
    return True


def _iou_at(history: list[dict[str, Any]], epoch: int) -> float:
    for row in history:
        if int(row.get("epoch") or 0) == epoch and row.get("val_iou") is not None:
            return float(row["val_iou"])
    return math.nan


def trial_table(sweep_dirs: Sequence[str | os.PathLike], factors: Sequence[Factor],
                epochs: int, at_epoch: int | None) -> pd.DataFrame:
    """One row per trial of ``sweep_dirs``: ``trial_id``, ``stop_reason`` (post-hoc label),
    ``epochs``, the coded factor columns, ``seed`` and the responses (module docstring);
    ``epochs`` is the design's last epoch."""
    rows = []
    for folder in sweep_dirs:
        sweep = load_sweep(folder)
        if sweep.trials.empty:
            continue
        labels = outcome_labels(sweep.trials)
        for (_, t), label in zip(sweep.trials.iterrows(), labels, strict=True):
            coded = _coded(t["config"] or {}, factors)
            if coded is None:
                raise BadInput(f"{folder}: trial {t['trial_id']} is not a run of the design")
            history = t["history"] or []
            finished = label not in UNFINISHED
            row = {"trial_id": t["trial_id"], "stop_reason": label, "epochs": t["epochs"],
                   **coded, "seed": int((t["config"] or {}).get("seed", 0)),
                   "final_iou": _iou_at(history, epochs) if finished else math.nan}
            if at_epoch:
                row[f"iou_epoch{at_epoch}"] = _iou_at(history, at_epoch)
            if label in FAILED_AS_ZERO:
                row["collapsed"] = 1.0
            elif finished and label == "completed" and int(t["epochs"] or 0) >= epochs:
                row["collapsed"] = 0.0
            else:
                row["collapsed"] = math.nan
            rows.append(row)
    columns = ["trial_id", "stop_reason", "epochs", *(f.name for f in factors), "seed",
               *response_names(at_epoch)]
    return pd.DataFrame(rows, columns=columns)


def why_sweep_report(sweep_dir: str | os.PathLike,
                     at_epoch: int | None = None) -> dict[str, Any]:
    """The `camotune why` report of a why sweep folder (and its fold-over, if run).
    ``at_epoch`` overrides the one in ``why.yaml``."""
    sweep_dir = Path(sweep_dir)
    pair, data = read_why(sweep_dir)
    at_epoch = at_epoch if at_epoch is not None else data.get("at_epoch")
    folders = [sweep_dir]
    fold = sweep_dir / FOLDOVER_DIR
    if (fold / "sweep.yaml").is_file():
        folders.append(fold)
    table = trial_table(folders, pair.factors, pair.good.epochs, at_epoch)
    summary = pair.summary()
    design = dict(summary["design"])
    if len(folders) > 1:
        design["fold_over"] = True
        design["type"] += " + its fold-over"
        design["runs"] = len(table[[f.name for f in pair.factors]].drop_duplicates())
        design["trials"] = len(table)
        if design["resolution"] is not None and len(design["generators"]) == 1:
            design["aliases"] = {}  # a half fraction and its fold-over: the full factorial
    if table.empty:
        raise BadInput(f"{sweep_dir}: no trial has started yet")
    report = why_report(table, summary["factors"], response_names(at_epoch), design=design)
    report["trials"] = len(table)
    return report


def design_sweep_report(sweep_dir: str | os.PathLike,
                        at_epoch: int | None = None) -> dict[str, Any] | None:
    """The why report of any design sweep: a `camotune why` sweep (`why_sweep_report`), or a
    space file's ``design:`` with its first level as "good" (coded -1) and its second as
    "bad"; None for a sampled sweep. ``at_epoch`` defaults to 3 for a space-file design (when
    its trials run longer)."""
    sweep_dir = Path(sweep_dir)
    if is_why_sweep(sweep_dir):
        return why_sweep_report(sweep_dir, at_epoch)
    sweep = load_sweep(sweep_dir)
    spec = sweep.design
    if not spec:
        return None
    design = Design.from_dict(spec)
    factors = [Factor(name, (name,), (a,), (b,)) for name, (a, b) in design.levels.items()]
    epochs = sweep.max_epochs
    if at_epoch is None and epochs > 3:
        at_epoch = 3
    table = trial_table([sweep_dir], factors, epochs, at_epoch)
    if table.empty:
        return None
    aliases = {}
    for name in design.factors:
        if design.aliases(name):
            aliases[name] = list(design.aliases(name))
    for i, a in enumerate(design.factors):
        for b in design.factors[i + 1:]:
            if design.aliases(a, b):
                aliases[f"{a}:{b}"] = list(design.aliases(a, b))
    summary = {"type": "full factorial" if design.fraction == 1 else
               f"1/{design.fraction} fraction", "runs": design.n_runs,
               "seeds": sorted({int(s) for s in table["seed"]}), "trials": len(table),
               "resolution": design.resolution, "generators": list(design.generators),
               "defining_relation": list(design.defining_relation), "letters": design.letters,
               "extra_good_corner": False, "aliases": aliases, "epochs": epochs}
    report = why_report(table, [f.to_dict() for f in factors], response_names(at_epoch),
                        design=summary)
    report["trials"] = len(table)
    return report
