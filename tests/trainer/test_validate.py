"""Validation at a fixed evaluation size: trials at any --img-size are scored against the same
masks, and the objective picks whose figures val_iou is."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from camotune.trainer.loaders import DataModule
from camotune.trainer.losses import CamoLoss
from camotune.trainer.validate import Batches, objective_weights, validate_weights


class Constant(torch.nn.Module):
    """Predicts the same logit everywhere, at the input's resolution."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, x: torch.Tensor) -> SimpleNamespace:
        logits = torch.full((x.shape[0], 1, *x.shape[-2:]), self.logit)
        return SimpleNamespace(logits=logits, aux_loss=None, deep=[])


def _data(dataset: Path, img_size: int, eval_size: int | None) -> DataModule:
    return DataModule(dataset, img_size=img_size, val_fraction=0.25, eval_size=eval_size)


def _scores(data: DataModule, logit: float, *, full: bool = False) -> dict:
    batches = Batches(data.val_eval_loader(4), torch.device("cpu"), channels_last=False)
    return validate_weights(Constant(logit), batches, CamoLoss(), None, full=full)


def test_two_training_sizes_are_scored_against_identical_masks(synth_dataset: Path) -> None:
    small, large = _data(synth_dataset, 32, 48), _data(synth_dataset, 64, 48)
    masks = [torch.cat([b[2] for b in d.val_eval_loader(4)]) for d in (small, large)]
    assert masks[0].shape[-2:] == (48, 48) and torch.equal(masks[0], masks[1])
    # the loss still sees the masks at the training size
    assert next(iter(small.val_eval_loader(4)))[1].shape[-2:] == (32, 32)
    a, b = _scores(small, 1.0, full=True), _scores(large, 1.0, full=True)
    for key in ("iou", "dice", "fg_ratio", "gt_fg_ratio", "sm", "em", "wfm", "mae"):
        assert a[key] == b[key], key
    assert 0.0 < a["iou"] < 1.0 and a["fg_ratio"] == 1.0
    # all foreground: the IoU of an image is its object's share of the 48 x 48 mask (0 for an
    # empty mask), so the mean IoU is the mean share
    share = masks[0].float().mean(dim=(1, 2)).mean().item()
    assert a["iou"] == pytest.approx(share, abs=1e-6)
    assert a["gt_fg_ratio"] == pytest.approx(share, abs=1e-6)


def test_masks_at_the_training_size_would_have_differed(synth_dataset: Path) -> None:
    """The control: scored at their own training size, the same constant prediction gets
    different figures at 32 and 64 px (the masks differ by the resize)."""
    a, b = _scores(_data(synth_dataset, 32, None), 1.0), _scores(_data(synth_dataset, 64, None), 1.0)
    assert a["gt_fg_ratio"] != b["gt_fg_ratio"] and a["iou"] != b["iou"]


def test_logits_are_resized_bilinearly_before_the_threshold(synth_dataset: Path) -> None:
    data = _data(synth_dataset, 32, 64)
    images, _, masks = next(iter(data.val_eval_loader(2)))
    # a left-to-right ramp of logits, -1 .. +1 across the image at 32 px
    ramp = torch.linspace(-1, 1, 32).expand(32, 32)

    class Ramp(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> SimpleNamespace:
            return SimpleNamespace(logits=ramp.expand(x.shape[0], 1, 32, 32).clone(),
                                   aux_loss=None, deep=[])

    batches = Batches([(images, _, masks)], torch.device("cpu"), channels_last=False)
    got = validate_weights(Ramp(), batches, CamoLoss(), None, full=False)
    up = torch.nn.functional.interpolate(ramp[None, None], size=(64, 64), mode="bilinear",
                                         align_corners=False)
    assert got["fg_ratio"] == pytest.approx((up > 0).float().mean().item(), abs=1e-7)
    assert got["fg_ratio"] == pytest.approx(0.5, abs=1e-7)


@pytest.mark.parametrize(("objective", "ema_iou", "expected"), [
    ("raw", 0.9, "raw"), ("ema", 0.1, "ema"), ("best", 0.9, "ema"), ("best", 0.1, "raw"),
    ("best", 0.5, "raw"),  # a tie keeps the raw weights
])
def test_objective_weights(objective: str, ema_iou: float, expected: str) -> None:
    raw, ema = {"iou": 0.5}, {"iou": ema_iou}
    figures, which = objective_weights(objective, raw, ema)
    assert which == expected and figures is (ema if expected == "ema" else raw)
    assert objective_weights(objective, raw, None) == (raw, "raw")  # EMA off: raw


def test_eval_size_defaults_to_the_training_size(synth_dataset: Path) -> None:
    data = _data(synth_dataset, 32, None)
    assert data.eval_size == 32
    _, a, b = next(iter(data.val_eval_loader(3)))
    assert np.array_equal(a.numpy(), b.numpy())
