"""Sweep folders written by hand, as `camotune sweep` and its trials write them: sweep.yaml,
trials.jsonl lines and each trial's history.csv. Shared by the results tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from camotune.search.settings import SweepSettings
from camotune.spaces import Space
from camotune.trainer.config import TrainConfig, from_dict, to_dict
from camotune.trainer.history import HistoryWriter

SPACE = {"name": "fake", "description": "a sampled space",
         "params": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
                    "batch_size": {"type": "choice", "values": [4, 8, 16]}},
         "fixed": {"epochs": 6, "stage1_epochs": 4}}


def write_sweep(root: Path, space: Space, *, scheduler: str = "asha") -> Path:
    """A sweep folder with sweep.yaml written as `camotune sweep` writes it."""
    base = TrainConfig(dataset_path="/data/cod", backbone="edgenext_xx_small", pretrained=False)
    settings = SweepSettings(name="fake", storage_path=str(root), space=space,
                             space_source="fake", base=base, scheduler=scheduler)
    folder = root / "fake"
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump(settings.to_dict(), sort_keys=False))
    return folder


class Events:
    """Writes trials.jsonl lines and history.csv files the way the driver and trials do."""

    def __init__(self, folder: Path, space: Space) -> None:
        self.folder, self.space, self.t = folder, space, 1000.0
        self.base = TrainConfig(dataset_path="/data/cod", backbone="edgenext_xx_small",
                                pretrained=False)

    def _line(self, event: dict[str, Any], text: str | None = None) -> None:
        self.t += 1.0
        with (self.folder / "trials.jsonl").open("a") as fh:
            fh.write((text if text is not None else json.dumps({"time": self.t, **event})) + "\n")

    def start(self, tid: str, params: dict[str, Any], *, restored: bool = False) -> None:
        cfg = self.space.apply(self.base, params)
        cfg = from_dict({"checkpoint_dir": str(self.folder / "trials" / tid), "threads": 1}, cfg)
        (self.folder / "trials" / tid).mkdir(parents=True, exist_ok=True)
        self._line({"event": "start", "trial_id": tid, "params": params, "config": to_dict(cfg),
                    "trial_dir": f"trials/{tid}", "lr_stage1": cfg.resolved_lr(1),
                    "lr_stage2": cfg.resolved_lr(2), "restored": restored,
                    "resources": {"cpu": 2.0, "gpu": 0.0}})

    def epochs(self, tid: str, ious: list[float | None], *, history: bool = True,
               ema: list[float] | None = None, first: int = 1) -> None:
        path = self.folder / "trials" / tid / "history.csv"
        writer = HistoryWriter(path, keep_until=first - 1) if history else None
        for i, iou in enumerate(ious):
            n = first + i
            m = {"epoch": n, "stage": 1 if n <= 4 else 2, "val_iou": iou, "val_iou_raw": iou,
                 "val_iou_ema": None if ema is None else ema[i], "best_val_iou": iou,
                 "train_loss": 1.0 / n, "val_dice": None if iou is None else iou + 0.1}
            if writer is not None:
                writer.append(m)
            self._line({"event": "epoch", "trial_id": tid, "epoch": n, "metrics": m,
                        "seconds": 10.0 * n})

    def end(self, tid: str, reason: str, epochs: int, *, rung: int | None = None) -> None:
        self._line({"event": "end", "trial_id": tid, "stop_reason": reason, "rung": rung,
                    "epochs": epochs, "best_val_iou": None, "last_val_iou": None,
                    "gpu_seconds": 20.0 * epochs, "message": "", "evidence": {}})

    def raw(self, text: str) -> None:
        self._line({}, text)
