"""Glue between a sweep and the collapse attribution (:mod:`camotune.results.attribution`).

`attribution_table` turns a sweep's trials into the table ``factorial_effects`` reads: one row
per trial with its factor values and the responses ``iou_epoch3`` (val_iou at epoch 3, or at
the trial's last epoch when it ran fewer), ``final_iou`` (val_iou at the last epoch run),
``val_iou_ema`` and ``val_iou_raw`` (both at the last epoch run, so the EMA gap compares the
two weights at the same moment) and ``best_val_iou``.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from camotune.results.attribution import (
    FAILED_AS_ZERO,
    attribution_report,
    separating_parameters,
)
from camotune.results.read import UNFINISHED, Sweep


def _value(row: dict[str, Any] | None, key: str) -> float:
    value = None if row is None else row.get(key)
    if value is None:
        return math.nan
    return float(value)


def _at_epoch(history: list[dict[str, Any]], epoch: int) -> dict[str, Any] | None:
    """The row of ``epoch``, or the last row when the trial ran fewer epochs; None if none."""
    if not history:
        return None
    rows = [r for r in history if int(r.get("epoch") or 0) <= epoch]
    return rows[-1] if rows else history[0]


def attribution_table(sweep: Sweep, *, early_epoch: int = 3) -> pd.DataFrame:
    """One row per trial: ``trial_id``, ``stop_reason``, the searched params (the design's
    factors and ``seed``), ``iou_epoch<N>`` (N = ``early_epoch``), ``final_iou``,
    ``val_iou_ema``, ``val_iou_raw``, ``best_val_iou``, ``epochs``. Responses a trial did not
    record are NaN (``factorial_effects`` scores NaN of collapsed/diverged trials as 0); so are
    the final responses of unfinished trials (running, interrupted, orphaned), and their early
    response until they reach that epoch."""
    rows = []
    for _, t in sweep.trials.iterrows():
        history = t["history"]
        early, last = _at_epoch(history, early_epoch), history[-1] if history else None
        if t["stop_reason"] in UNFINISHED:
            # not final yet: only an early epoch the trial has already reached counts
            early = early if early is not None and int(early["epoch"]) >= early_epoch else None
            last = None
        row = {"trial_id": t["trial_id"], "stop_reason": t["stop_reason"]}
        row.update({p: t[p] for p in sweep.params})
        row.update({
            f"iou_epoch{early_epoch}": _value(early, "val_iou"),
            "final_iou": _value(last, "val_iou"),
            "val_iou_ema": _value(last, "val_iou_ema"),
            "val_iou_raw": _value(last, "val_iou_raw"),
            "best_val_iou": t["best_val_iou"], "epochs": t["epochs"],
        })
        rows.append(row)
    columns = ["trial_id", "stop_reason", *sweep.params, f"iou_epoch{early_epoch}", "final_iou",
               "val_iou_ema", "val_iou_raw", "best_val_iou", "epochs"]
    return pd.DataFrame(rows, columns=columns)


def design_levels(sweep: Sweep) -> dict[str, tuple[Any, Any]]:
    """The design's factor -> (first level, second level); {} for a sampled space."""
    design = sweep.design or {}
    return {f: tuple(v) for f, v in (design.get("levels") or {}).items()}


EMA_NOTE = (
    "`val_iou` is the better of the raw and the EMA weights' IoU, so with EMA on an average "
    "that still holds its early weights sets a floor under `val_iou` (a near-initial model "
    "that marks much of the image foreground scores about the foreground share) while the "
    "raw weights collapse. The `val_iou_raw` table above (final epoch) shows the training "
    "itself; compare the two before reading an EMA effect as a cure."
)


def collapse_report(sweep: Sweep, *, early_epoch: int = 3) -> str | None:
    """Markdown attribution report of a factorial sweep (None for a sampled space, or while no
    trial has recorded an epoch). Responses: epoch-``early_epoch`` IoU and final IoU, and when
    ``use_ema`` is a factor also the raw weights' final IoU (see ``EMA_NOTE``)."""
    levels = design_levels(sweep)
    if not levels:
        return None
    table = attribution_table(sweep, early_epoch=early_epoch)
    if table["final_iou"].isna().all() and not table["stop_reason"].isin(FAILED_AS_ZERO).any():
        return None
    responses = [f"iou_epoch{early_epoch}", "final_iou"]
    if "use_ema" in levels:
        responses.append("val_iou_raw")
    report = attribution_report(table, levels, responses)
    return report + ("\n" + EMA_NOTE + "\n" if "use_ema" in levels else "")


# A trial that predicts (almost) no foreground at its last epoch while the ground truth has
# some: collapsed, whether or not a stopper ended it (a factorial sweep runs without one).
EMPTY_PREDICTION = 0.002


def outcome_labels(df: pd.DataFrame) -> pd.Series:
    """Each trial's stop reason, with trials that ran to the end all background labelled
    ``collapsed`` (what the collapse stopper would have said)."""
    labels = df["stop_reason"].copy()
    if "last_val_fg_ratio" in df and "last_gt_fg_ratio" in df:
        empty = (df["last_val_fg_ratio"] < EMPTY_PREDICTION) & (
            df["last_gt_fg_ratio"] > EMPTY_PREDICTION)
        labels[empty & (labels == "completed")] = "collapsed"
    return labels


def separation(sweep: Sweep) -> pd.DataFrame | None:
    """``separating_parameters`` over the searched params; None when no trial collapsed or
    diverged, or every trial did (nothing to separate). Trials that completed all background
    count as collapsed."""
    df = sweep.trials.assign(stop_reason=outcome_labels(sweep.trials))
    bad = df["stop_reason"].isin(FAILED_AS_ZERO)
    if not bad.any() or bad.all() or not sweep.params:
        return None
    out = separating_parameters(df, list(sweep.params))
    return None if out.empty else out


def separation_text(sep: pd.DataFrame) -> str:
    """A plain table of `separation`'s result."""
    lines = ["What separates collapsed and diverged trials from the rest "
             "(balanced accuracy 0.5 = nothing, 1.0 = perfectly):"]
    for r in sep.itertuples():
        detail = r.bad_rate_by_value or f"median {r.median_bad:.3g} (bad) vs {r.median_other:.3g}"
        p = "n/a" if r.p_value != r.p_value else f"{r.p_value:.3g}"
        lines.append(f"  {r.param:<22} {r.rule or '-':<28} accuracy {r.accuracy:.2f}  "
                     f"p {p:<8} {detail}")
    return "\n".join(lines)
