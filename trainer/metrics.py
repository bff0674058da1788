"""Segmentation metrics: per-image IoU/Dice on the device, and the COD metric set.

One IoU definition everywhere (training's ``val_iou*``, ``camotune evaluate``'s ``iou``): the
logits are resized to the ground truth's size with bilinear interpolation (`resize_logits`), a
pixel is foreground when sigmoid(logit) > 0.5 (logit > 0), IoU and Dice are computed per
image and averaged over images (not pooled over a batch). When the prediction and the ground
truth are both empty, IoU = Dice = 1 (the prediction is exactly right; the usual convention);
an empty prediction against a non-empty mask, or the reverse, scores 0.

Two families:

- Device metrics for every validation epoch (`iou_dice`, `fg_ratio`, `ValAccumulator`):
  batched torch, no host synchronisation until `ValAccumulator.compute`, which syncs once.
- `SODMetrics`: S-measure, E-measure, weighted F-measure, F-measure and MAE delegated to
  pysodmetrics exactly as PySODEvalToolkit calls it (pred uint8 0..255, min-max normalised per
  image by the library unless constant; gt > 128 is foreground), plus ``iou``/``dice`` by the
  definition above (NumPy, from the foreground map given to `SODMetrics.step`). The
  library's own IoU/Dice threshold the *min-max normalised* prediction at 0.5 and score 0
  when both are empty; they are kept under their own names ``iou_minmax``/``dice_minmax``
  and differ from ``iou``/``dice`` whenever a prediction does not span 0..1 (an untrained or
  collapsing model: 0.585 against 0.267 was seen on one checkpoint). Metric keys map onto the
  epoch metrics as val_sm = sm, val_em = em_mean, val_wfm = wfm, val_mae = mae.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import Tensor

# torch is imported inside the device functions: `SODMetrics` also runs in metric worker
# processes (camotune evaluate), which then need neither torch's import time nor its memory.

SOD_KEYS = ("sm", "em_mean", "em_max", "em_adp", "wfm", "fm_mean", "fm_max", "mae", "iou", "dice",
            "iou_minmax", "dice_minmax")


# -- device metrics -------------------------------------------------------------------------

def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def resize_logits(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """``logits`` (B x 1 x h x w) resized to ``size`` (H, W) with bilinear interpolation
    (align_corners=False), the one way a prediction is brought to its ground truth's size
    before thresholding; returned unchanged when it already has that size."""
    import torch.nn.functional as F

    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def iou_dice(logits: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image IoU and Dice of ``logits > 0`` (sigmoid > 0.5) against ``masks > 0.5``.

    ``logits`` and ``masks``: B x 1 x H x W (or any B x ... of equal size). Returns two float32
    tensors of shape B on the same device. Both empty gives 1, one of them empty gives 0.
    """
    import torch

    pred = _flat(logits) > 0
    gt = _flat(masks) > 0.5
    inter = (pred & gt).sum(dim=1).float()
    p = pred.sum(dim=1).float()
    g = gt.sum(dim=1).float()
    union = p + g - inter
    empty = union == 0  # p + g == 0 too
    iou = torch.where(empty, torch.ones_like(inter), inter / union.clamp_min(1))
    dice = torch.where(empty, torch.ones_like(inter), 2 * inter / (p + g).clamp_min(1))
    return iou, dice


def fg_ratio(x: Tensor, threshold: float = 0.5) -> Tensor:
    """Per-image fraction of elements above ``threshold`` (shape B, float32).

    Use ``threshold=0.0`` for logits (sigmoid > 0.5) and the default for {0, 1} masks or
    probabilities. 0 means all background: the collapse signal.
    """
    return (_flat(x) > threshold).float().mean(dim=1)


class ValAccumulator:
    """Sums per-image metrics of a validation pass on the device; one host sync at the end.

    ``update(logits, masks, loss=None)`` per batch (``loss``: the batch-mean loss as a scalar
    tensor, weighted by the batch size). ``compute()`` returns the means over images:
    ``iou``, ``dice``, ``fg_ratio`` (predicted), ``gt_fg_ratio``, ``images``, and ``loss`` when
    any batch gave one. With no image seen, every mean is NaN. For data-parallel runs,
    all-reduce (sum) `totals` across workers before `compute`.
    """

    # columns of `totals`
    _N, _IOU, _DICE, _FG, _GT_FG, _LOSS, _LOSS_N = range(7)

    def __init__(self, device: torch.device | str | None = None) -> None:
        import torch

        self.totals = torch.zeros(7, dtype=torch.float64, device=device)

    def reset(self) -> None:
        self.totals.zero_()

    def update(self, logits: Tensor, masks: Tensor, loss: Tensor | None = None) -> None:
        import torch

        if self.totals.device != logits.device:
            self.totals = self.totals.to(logits.device)
        n, dev = logits.shape[0], logits.device
        with torch.no_grad():
            iou, dice = iou_dice(logits, masks)
            row = [torch.full((), float(n), device=dev), iou.sum(), dice.sum(),
                   fg_ratio(logits, 0.0).sum(), fg_ratio(masks).sum()]
            if loss is None:
                row += [torch.zeros((), device=dev)] * 2
            else:
                row += [loss.detach().float().reshape(()) * n, torch.full((), float(n), device=dev)]
            self.totals += torch.stack([r.double() for r in row])

    def compute(self) -> dict[str, float]:
        t = self.totals.tolist()  # the one host sync
        n = t[self._N]

        def mean(i: int, count: float) -> float:
            return t[i] / count if count > 0 else float("nan")

        out = {"iou": mean(self._IOU, n), "dice": mean(self._DICE, n),
               "fg_ratio": mean(self._FG, n), "gt_fg_ratio": mean(self._GT_FG, n),
               "images": int(n)}
        if t[self._LOSS_N] > 0:
            out["loss"] = mean(self._LOSS, t[self._LOSS_N])
        return out


# -- the COD metric set (pysodmetrics) ------------------------------------------------------

def to_uint8_pred(pred: np.ndarray) -> np.ndarray:
    """A prediction as the COD tools read it: uint8 0..255. Floats in [0, 1] are scaled and
    rounded (as a saved PNG would be); uint8 passes through."""
    pred = np.asarray(pred)
    if pred.dtype == np.uint8:
        return pred
    if pred.dtype == bool:
        return pred.astype(np.uint8) * 255
    if pred.size and not (np.isfinite(pred).all() and pred.min() >= 0 and pred.max() <= 1):
        raise ValueError("a float prediction must lie in [0, 1]")
    return np.rint(pred.astype(np.float64) * 255).astype(np.uint8)


def to_uint8_gt(gt: np.ndarray) -> np.ndarray:
    """A mask as uint8 {0, 255}-style grey levels: bool or {0, 1} masks are scaled by 255;
    anything else (grey 0..255) passes through (the library binarises at > 128)."""
    gt = np.asarray(gt)
    if gt.dtype == bool or (gt.size and gt.max() <= 1):
        return gt.astype(np.uint8) * 255
    if gt.dtype != np.uint8:
        raise ValueError(f"ground truth must be uint8 or bool (got {gt.dtype})")
    return gt


def binary_iou_dice(fg: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """IoU and Dice of one image: ``fg`` (bool, predicted foreground) against ``gt`` (bool), the
    conventions of `iou_dice` (both empty gives 1, one of them empty gives 0)."""
    inter = float(np.count_nonzero(fg & gt))
    p, g = float(np.count_nonzero(fg)), float(np.count_nonzero(gt))
    if p + g == 0:
        return 1.0, 1.0
    return inter / (p + g - inter), 2 * inter / (p + g)


class SODMetrics:
    """The COD literature's metric set over a stream of (prediction, ground truth) pairs.

    ``step(pred, gt, fg=None)``: ``pred`` HxW uint8 0..255 or float in [0, 1] (the sigmoid
    map); ``gt`` HxW uint8 {0, 255} (grey, > 128 is foreground), {0, 1} or bool; ``fg`` the
    predicted foreground (bool HxW, sigmoid > 0.5 of the resized logits); without it, a float
    ``pred`` > 0.5, or a uint8 ``pred`` > 127 (sigmoid >= 0.5 up to the uint8 rounding). All of
    the same shape (resize the prediction to the GT's size first). ``results()`` returns means
    over the images for `SOD_KEYS`: ``sm``, ``em_mean``, ``em_max``, ``em_adp``, ``wfm``,
    ``fm_mean``, ``fm_max`` (beta^2 = 0.3), ``mae``, ``iou``, ``dice``, ``iou_minmax``,
    ``dice_minmax``, and ``images``. ``merge(other)`` folds in another instance (e.g. one
    filled in a worker process); the results do not depend on the order of the images.
    """

    def __init__(self) -> None:
        import py_sod_metrics as m  # heavy (cv2, scipy, skimage): imported on use

        self.sm = m.Smeasure()
        self.em = m.Emeasure()
        self.wfm = m.WeightedFmeasure()
        self.mae = m.MAE()
        self.fmv2 = m.FmeasureV2(metric_handlers={
            "fm": m.FmeasureHandler(with_dynamic=True, with_adaptive=False, beta=0.3),
            "iou": m.IOUHandler(with_dynamic=False, with_adaptive=False, with_binary=True,
                                sample_based=True),
            "dice": m.DICEHandler(with_dynamic=False, with_adaptive=False, with_binary=True,
                                  sample_based=True),
        })
        self.ious: list[float] = []
        self.dices: list[float] = []
        self.images = 0

    def step(self, pred: np.ndarray, gt: np.ndarray, fg: np.ndarray | None = None) -> None:
        if fg is None:
            raw = np.asarray(pred)
            fg = raw > 127 if raw.dtype == np.uint8 else raw > 0.5
        pred, gt = to_uint8_pred(pred), to_uint8_gt(gt)
        fg = np.asarray(fg, dtype=bool)
        if pred.ndim != 2 or pred.shape != gt.shape or fg.shape != gt.shape:
            raise ValueError(f"pred {pred.shape}, fg {fg.shape} and gt {gt.shape} must be "
                             "equal H x W shapes")
        for metric in (self.sm, self.em, self.wfm, self.mae, self.fmv2):
            metric.step(pred=pred, gt=gt)
        iou, dice = binary_iou_dice(fg, gt > 128)
        self.ious.append(iou)
        self.dices.append(dice)
        self.images += 1

    def _lists(self) -> list[list[Any]]:
        handlers = self.fmv2._metric_handlers
        return [self.sm.sms, self.em.adaptive_ems, self.em.changeable_ems,
                self.wfm.weighted_fms, self.mae.maes, handlers["fm"].dynamic_results,
                handlers["iou"].binary_results, handlers["dice"].binary_results,
                self.ious, self.dices]

    def merge(self, other: SODMetrics) -> SODMetrics:
        """Append ``other``'s per-image records to this one; returns self."""
        for mine, theirs in zip(self._lists(), other._lists(), strict=True):
            mine.extend(theirs)
        self.images += other.images
        return self

    def results(self) -> dict[str, float]:
        if self.images == 0:
            raise ValueError("no image was scored")
        em = self.em.get_results()["em"]
        fm = self.fmv2.get_results()
        return {
            "sm": float(self.sm.get_results()["sm"]),
            "em_mean": float(em["curve"].mean()),
            "em_max": float(em["curve"].max()),
            "em_adp": float(em["adp"]),
            "wfm": float(self.wfm.get_results()["wfm"]),
            "fm_mean": float(fm["fm"]["dynamic"].mean()),
            "fm_max": float(fm["fm"]["dynamic"].max()),
            "mae": float(self.mae.get_results()["mae"]),
            "iou": float(np.mean(self.ious)),
            "dice": float(np.mean(self.dices)),
            "iou_minmax": float(fm["iou"]["binary"]),
            "dice_minmax": float(fm["dice"]["binary"]),
            "images": self.images,
        }


def score_pairs(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> SODMetrics:
    """A `SODMetrics` filled with ``(pred, gt)`` pairs (a unit of work for a process pool)."""
    metrics = SODMetrics()
    for pred, gt in pairs:
        metrics.step(pred, gt)
    return metrics
