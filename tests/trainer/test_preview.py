"""preview.png: titled with the run, epoch, IoU and weights; written after every epoch, so a run
stopped after any epoch leaves the picture of that epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camotune.trainer.config import TrainConfig
from camotune.trainer.loop import fit
from camotune.trainer.preview import PREVIEW_FILE, preview_title, save_preview


def test_title_names_run_epoch_iou_and_weights() -> None:
    assert preview_title("trial_00003", 6, 0.41234, "ema") == \
        "trial_00003  epoch 6  val IoU 0.412 (ema weights)"
    assert preview_title("ckpt", 1, None, "raw") == "ckpt  epoch 1  val IoU - (raw weights)"


def test_picture_layout_and_boundary(tmp_path: Path) -> None:
    yy, xx = np.mgrid[:32, :32]
    disc = ((yy - 16) ** 2 + (xx - 16) ** 2 < 64).astype(np.float32)
    images = np.zeros((2, 32, 32, 3), np.uint8)
    path = save_preview(tmp_path / "p.png", images, np.stack([disc] * 2), np.stack([disc] * 2),
                        title="run  epoch 1")
    with Image.open(path) as png:
        rgb = np.asarray(png.convert("RGB"))
    assert rgb.shape[1] > rgb.shape[0] / 2
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    assert red.sum() > 50  # the 0.5 boundary of each predicted disc


class Stop(Exception):
    pass


def test_a_run_stopped_after_its_first_epoch_has_that_epochs_preview(
        synth_dataset: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(dataset_path=str(synth_dataset), checkpoint_dir=str(tmp_path / "run"),
                      backbone="edgenext_xx_small", pretrained=False, img_size=64, epochs=3,
                      stage1_epochs=2, batch_size=4, accumulation_steps=2, num_workers=0,
                      threads=1, full_metrics_every=5, seed=7)

    def stop(row: dict) -> None:  # as a scheduler stopping the trial after epoch 1
        raise Stop

    with pytest.raises(Stop):
        fit(cfg, report=stop)
    assert (tmp_path / "run" / PREVIEW_FILE).is_file()  # epoch 1 is neither full nor last
