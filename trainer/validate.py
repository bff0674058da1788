"""Validation of one set of weights: IoU, Dice and foreground ratios on the device every epoch;
the pysodmetrics set (S-measure, mean E-measure, weighted F-measure, MAE) when asked.

The validation images are a seeded split of the *training* images; the test split is never
used here. The loss is the training loss at the training side; every other figure is scored
against the masks at the evaluation size (``--eval-size``), the logits resized to it
bilinearly (`camotune.trainer.metrics.resize_logits`), so trials at different image sizes
are scored against the same ground truth. Under data parallelism each worker scores its
shard and the sums are all-reduced.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from camotune.trainer.step import autocast


def device_batches(loader, device: torch.device, channels_last: bool) -> Iterator:
    """(images, masks, ...) from a loader of uint8 batches, moved to ``device`` and normalised
    there: images float B x 3 x H x W (ImageNet statistics), each mask tensor float
    B x 1 x H x W (a loader may give more than one mask tensor per batch)."""
    from camotune.trainer.data import masks_to_float, normalize_batch

    for images, *masks in loader:
        images = normalize_batch(images.to(device, non_blocking=True))
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        yield (images, *(masks_to_float(m.to(device, non_blocking=True)) for m in masks))


class Batches:
    """Re-iterable (images, masks[, eval masks]) on the device, normalised: validated once per
    weight set."""

    def __init__(self, loader, device: torch.device, channels_last: bool) -> None:
        self.loader = loader
        self.device = device
        self.channels_last = channels_last

    def __iter__(self) -> Iterator:
        return device_batches(self.loader, self.device, self.channels_last)


@torch.no_grad()
def validate_weights(model: torch.nn.Module, batches: Batches, loss_fn, amp_dtype, *,
                     full: bool, world: int = 1) -> dict[str, Any]:
    """Scores ``model`` on ``batches``: ``iou``, ``dice``, ``fg_ratio``, ``gt_fg_ratio``,
    ``loss``, and with ``full`` also ``sm``, ``em``, ``wfm``, ``mae`` (pysodmetrics).

    Batches are ``(images, masks)`` or ``(images, masks, eval_masks)``: the loss uses
    ``masks`` (the training side), every other figure ``eval_masks`` (or ``masks`` when
    absent) with the logits resized to their size. The model's train/eval mode is restored
    afterwards."""
    from camotune.trainer.metrics import SODMetrics, ValAccumulator, resize_logits

    was_training = model.training
    model.eval()
    acc = ValAccumulator(batches.device)
    sod = SODMetrics() if full else None
    try:
        for images, loss_masks, *rest in batches:
            masks = rest[0] if rest else loss_masks
            with autocast(batches.device, amp_dtype):
                out = model(images)
                loss, _ = loss_fn(out, loss_masks)
            logits = resize_logits(out.logits.float(), masks.shape[-2:])
            acc.update(logits, masks, loss)
            if sod is not None:
                probs = torch.sigmoid(logits[:, 0]).cpu().numpy()
                fgs = (logits[:, 0] > 0).cpu().numpy()
                gts = masks[:, 0].to(torch.uint8).cpu().numpy()
                for p, f, g in zip(probs, fgs, gts, strict=True):
                    sod.step(p, g, fg=f)
    finally:
        model.train(was_training)
    if world > 1:
        dist.all_reduce(acc.totals)
    figures = acc.compute()
    if sod is not None:
        if world > 1:
            parts: list[Any] = [None] * world
            dist.all_gather_object(parts, sod)
            sod = parts[0]
            for other in parts[1:]:
                sod.merge(other)
        r = sod.results()
        figures.update(sm=r["sm"], em=r["em_mean"], wfm=r["wfm"], mae=r["mae"])
    return figures


def objective_weights(objective: str, raw: dict[str, Any],
                      ema: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The figures that ``--objective`` makes ``val_iou`` (and the other ``val_*``) of, and
    which weights they are (``"raw"`` or ``"ema"``): ``raw``; ``ema``; or ``best``, the higher
    IoU of the two (raw on a tie). Without EMA weights (``ema`` None) every objective is raw."""
    if ema is None or objective == "raw":
        return raw, "raw"
    if objective == "ema":
        return ema, "ema"
    if objective != "best":
        raise ValueError(f"unknown objective {objective!r}")
    return (ema, "ema") if ema["iou"] > raw["iou"] else (raw, "raw")
