"""The reruns of ``camotune confirm``: each a Ray task that trains a config to the end and
evaluates its ``best.pt``, and the per-config summary over seeds (the command itself is
`camotune.commands.confirm`)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from camotune.errors import BadInput
from camotune.trainer.config import TrainConfig, from_dict

log = logging.getLogger(__name__)

TEST_KEYS = ("sm", "em_mean", "wfm", "mae", "iou", "dice")


def run_one(cfg_dict: dict[str, Any], split: str) -> dict[str, Any]:
    """Train one rerun to the end (resuming it if an earlier confirm was interrupted) and
    evaluate its best.pt. Runs in a Ray task."""
    from camotune.trainer.evaluate import evaluate_checkpoint
    from camotune.trainer.loop import fit

    cfg = from_dict(cfg_dict)
    last = Path(cfg.checkpoint_dir) / "last.pt"
    if last.is_file():
        cfg = dataclasses.replace(cfg, resume_from=str(last))
    result = fit(cfg, overwrite=True)
    best = Path(cfg.checkpoint_dir) / "best.pt"
    row: dict[str, Any] = {"seed": cfg.seed, "best_val_iou": result.best_val_iou,
                           "checkpoint": str(best)}
    try:
        table = evaluate_checkpoint(best, cfg.dataset_path, split=split, workers=0)
    except BadInput as exc:  # e.g. a layout without test sets: report, do not fail
        row["evaluation"] = str(exc)
        return row
    for _, t in table.iterrows():
        for key in TEST_KEYS:
            row[f"{t['dataset']}/{key}"] = float(t[key])
    return row


def run_all(jobs: list[tuple[str, TrainConfig]], settings, split: str) -> list[dict[str, Any]]:
    """Every rerun as a Ray task with the sweep's per-trial resources; progress on stderr."""
    import ray

    from camotune.search.runtime import init_ray
    from camotune.trainer.config import to_dict

    init_ray(settings.address)
    task = ray.remote(run_one).options(num_cpus=settings.cpus_per_trial,
                                       num_gpus=settings.gpus_per_trial)
    pending = {task.remote(to_dict(cfg), split): (tid, cfg) for tid, cfg in jobs}
    rows = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        tid, cfg = pending.pop(done[0])
        row = ray.get(done[0])
        rows.append({"trial_id": tid, **row})
        log.info("confirm %d/%d: trial=%s seed=%d best_val_iou=%.4f", len(rows), len(jobs),
                 tid, cfg.seed, row["best_val_iou"])
    return rows


def summarise(rows: list[dict[str, Any]]):
    """One row per config: mean and std of best val_iou over its seeds, and the means of the
    test metrics; sorted best first."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    metrics = [c for c in frame.columns if "/" in c]
    grouped = frame.groupby("trial_id")
    summary = pd.DataFrame({
        "seeds": grouped.size(),
        "val_iou_mean": grouped["best_val_iou"].mean(),
        "val_iou_std": grouped["best_val_iou"].std(ddof=1).fillna(0.0),
        **{f"{m}_mean": grouped[m].mean() for m in metrics},
    }).sort_values("val_iou_mean", ascending=False)
    return summary.reset_index()
