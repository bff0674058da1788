"""Helpers for the model tests: a tiny fixed batch and the training loss the trainer uses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from camotune.model import CamoXpertOutput


def batch(n: int = 2, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images with a bright square object and its mask (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g) * 0.5
    mask = torch.zeros(n, 1, size, size)
    q = size // 4
    mask[:, :, q : 3 * q, q : 3 * q] = 1.0
    x = x + mask
    return x, mask


def total_loss(out: CamoXpertOutput, mask: torch.Tensor, aux_weight: float = 0.1) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(out.logits, mask)
    for d in out.deep:
        small = F.interpolate(mask, size=d.shape[-2:], mode="bilinear", align_corners=False)
        loss = loss + 0.4 * F.binary_cross_entropy_with_logits(d, small)
    return loss + aux_weight * out.aux_loss


@pytest.fixture
def make_batch():
    return batch


@pytest.fixture
def loss_fn():
    return total_loss
