"""The CamoXpert training loss: BCE + soft IoU + Sobel-edge, deep supervision, MoE auxiliary.

``CamoLoss()(out, mask)`` returns ``(total, terms)``. ``total`` is the differentiable scalar to
back-propagate; ``terms`` holds the *unweighted* value of each term, detached, for logging:

- ``bce``:  binary cross-entropy with logits, mean over pixels.
- ``iou``:  soft IoU loss ``1 - (sum(p*g) + s) / (sum(p + g - p*g) + s)`` per image (p the
  sigmoid, g the mask, s = 1 pixel of smoothing so an empty mask and an empty prediction give 0
  instead of 0/0), then the mean over images.
- ``edge``: mean L1 distance between the Sobel gradient magnitude of p and that of g.
- ``deep``: only when ``out.deep`` is non-empty: ``bce_weight * bce + iou_weight * iou`` of each
  deep logits map upsampled (bilinear) to the mask size, averaged over the maps.
- ``aux``:  the model's auxiliary (MoE load-balancing) loss, when it has one.

``total = bce_weight*bce + iou_weight*iou + edge_weight*edge + deep_supervision_weight*deep
+ aux_weight*aux``; ``terms["total"]`` is its detached copy.

Why L1 for the edge term: Sobel magnitudes are not probabilities (a diagonal step reaches
about 1.06 with the kernel scaled by 1/4), so BCE on them would need clamping that kills the
gradient exactly where edges are strongest; L1 is bounded by the magnitude itself, has a
useful gradient everywhere, and with an all-zero mask simply penalises spurious edges. The
magnitude is ``sqrt(gx^2 + gy^2 + eps)``: the eps keeps the gradient of sqrt finite on flat
regions (all-zero masks, saturated predictions).

Everything is computed in float32 with autocast disabled (the logits are cast up), so the loss
is the same under bf16/fp16 autocast. No host synchronisation happens in the call: no
``.item()``, no Python branch on a tensor value, so a training step can run ahead of the GPU.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IOU_SMOOTH = 1.0  # pixels of smoothing in the soft IoU (avoids 0/0 on empty masks)
EDGE_EPS = 1e-6  # inside the sqrt of the Sobel magnitude (finite gradient on flat regions)

# Sobel kernels scaled by 1/4 so that a unit step along x or y has magnitude 1.
_SOBEL = torch.tensor(
    [[[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
     [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]]
).unsqueeze(1) / 4.0  # 2 x 1 x 3 x 3: (gx, gy)


@functools.lru_cache(maxsize=16)
def _sobel_kernel(device: torch.device, dtype: torch.dtype) -> Tensor:
    """The kernel, copied to ``device`` once (a copy per step would be a host sync on CUDA)."""
    return _SOBEL.to(device=device, dtype=dtype)


def sobel_magnitude(x: Tensor) -> Tensor:
    """Sobel gradient magnitude of a B x 1 x H x W map (replicate padding: no false edges at
    the image border). Returns B x 1 x H x W, >= sqrt(EDGE_EPS)."""
    kernel = _sobel_kernel(x.device, x.dtype)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)
    return torch.sqrt(g.pow(2).sum(dim=1, keepdim=True) + EDGE_EPS)


def soft_iou_loss(prob: Tensor, mask: Tensor) -> Tensor:
    """``1 - soft IoU`` per image, averaged over the batch. prob, mask: B x 1 x H x W."""
    inter = (prob * mask).sum(dim=(1, 2, 3))
    union = (prob + mask - prob * mask).sum(dim=(1, 2, 3))
    return (1.0 - (inter + IOU_SMOOTH) / (union + IOU_SMOOTH)).mean()


def _resize_like(logits: Tensor, mask: Tensor) -> Tensor:
    if logits.shape[-2:] == mask.shape[-2:]:
        return logits
    return F.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)


class CamoLoss(nn.Module):
    """BCE + soft IoU + edge loss with deep supervision and the MoE auxiliary loss.

    Call with ``out`` (anything with ``.logits`` B x 1 x H x W pre-sigmoid, ``.deep`` a list of
    B x 1 x h x w logits or [], ``.aux_loss`` a scalar tensor or None) and ``mask`` (float
    B x 1 x H x W in {0, 1}). Returns ``(total, terms)``: see the module docstring. Weights
    must be >= 0; a zero weight keeps the term in ``terms`` but out of the gradient.
    """

    def __init__(self, *, bce_weight: float = 2.0, iou_weight: float = 1.5,
                 edge_weight: float = 1.0, deep_supervision_weight: float = 0.4,
                 aux_weight: float = 0.1) -> None:
        super().__init__()
        weights = dict(bce_weight=bce_weight, iou_weight=iou_weight, edge_weight=edge_weight,
                       deep_supervision_weight=deep_supervision_weight, aux_weight=aux_weight)
        for name, value in weights.items():
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0 (got {value!r})")
        self.bce_weight = float(bce_weight)
        self.iou_weight = float(iou_weight)
        self.edge_weight = float(edge_weight)
        self.deep_supervision_weight = float(deep_supervision_weight)
        self.aux_weight = float(aux_weight)

    def extra_repr(self) -> str:
        return (f"bce={self.bce_weight}, iou={self.iou_weight}, edge={self.edge_weight}, "
                f"deep={self.deep_supervision_weight}, aux={self.aux_weight}")

    def _region(self, logits: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        bce = F.binary_cross_entropy_with_logits(logits, mask)
        iou = soft_iou_loss(torch.sigmoid(logits), mask)
        return bce, iou

    def forward(self, out: Any, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits = out.logits
        if logits.shape != mask.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and mask {tuple(mask.shape)} differ")
        # The loss needs float32: sigmoid/IoU sums and the Sobel sqrt lose too much in bf16.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits = logits.float()
            mask = mask.float()
            bce, iou = self._region(logits, mask)
            edge = (sobel_magnitude(torch.sigmoid(logits)) - sobel_magnitude(mask)).abs().mean()
            total = self.bce_weight * bce + self.iou_weight * iou + self.edge_weight * edge
            terms = {"bce": bce, "iou": iou, "edge": edge}

            deep = list(getattr(out, "deep", None) or [])
            if deep:  # a Python list: its length is known on the host, no sync
                per_map = []
                for d in deep:
                    d_bce, d_iou = self._region(_resize_like(d.float(), mask), mask)
                    per_map.append(self.bce_weight * d_bce + self.iou_weight * d_iou)
                terms["deep"] = torch.stack(per_map).mean()
                total = total + self.deep_supervision_weight * terms["deep"]

            aux = getattr(out, "aux_loss", None)
            if aux is not None:
                terms["aux"] = aux.float().reshape(())
                total = total + self.aux_weight * terms["aux"]

        terms = {k: v.detach() for k, v in terms.items()}
        terms["total"] = total.detach()
        return total, terms


def loss_from_config(cfg: Any) -> CamoLoss:
    """The loss a `TrainConfig` asks for. The deep-supervision weight applies only with
    ``cfg.deep_supervision`` (otherwise 0: a model without deep heads has nothing to weigh)."""
    return CamoLoss(
        bce_weight=cfg.bce_weight,
        iou_weight=cfg.iou_weight,
        edge_weight=cfg.edge_weight,
        deep_supervision_weight=cfg.deep_supervision_weight if cfg.deep_supervision else 0.0,
        aux_weight=cfg.aux_weight,
    )
