"""``history.csv``: one row per finished epoch, the metric keys (`METRIC_KEYS`) as columns.

Rows are appended and flushed every epoch, so a run killed at any moment leaves every finished
epoch on disk. Empty values (metrics not computed that epoch) are empty cells.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

METRIC_KEYS: tuple[str, ...] = (
    "epoch", "stage", "train_loss", "val_loss", "val_iou", "val_iou_raw", "val_iou_ema",
    "val_dice", "val_mae", "val_sm", "val_em", "val_wfm", "val_fg_ratio", "gt_fg_ratio", "lr",
    "grad_norm", "best_val_iou", "epoch_time_s", "imgs_per_s", "val_fg_ratio_raw",
    "optimizer_steps", "images_seen",
)
INT_KEYS = frozenset({"epoch", "stage", "optimizer_steps", "images_seen"})


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def read_history(path: str | os.PathLike) -> list[dict[str, float | int | None]]:
    """Rows of a history.csv as dicts (empty cells -> None). Missing file -> []."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, float | int | None] = {}
            for key, text in raw.items():
                if key is None:
                    continue
                if text in ("", None):
                    row[key] = None
                else:
                    row[key] = int(float(text)) if key in INT_KEYS else float(text)
            rows.append(row)
    return rows


class HistoryWriter:
    """Appends rows to ``history.csv``; ``keep_until`` drops rows after an epoch (resume)."""

    def __init__(self, path: str | os.PathLike, *, keep_until: int | None = None) -> None:
        self.path = Path(path)
        rows = []
        if keep_until is not None:
            rows = [r for r in read_history(self.path) if int(r["epoch"] or 0) <= keep_until]
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(METRIC_KEYS)
            for r in rows:
                writer.writerow([_cell(r.get(k)) for k in METRIC_KEYS])
        os.replace(tmp, self.path)

    def append(self, metrics: Mapping[str, Any]) -> None:
        with self.path.open("a", newline="") as fh:
            csv.writer(fh).writerow([_cell(metrics.get(k)) for k in METRIC_KEYS])
            fh.flush()
            os.fsync(fh.fileno())
