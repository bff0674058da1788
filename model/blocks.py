"""Small building blocks shared by the gate, the experts and the decoder.

Every normalisation here is GroupNorm (never BatchNorm): the head must train with a batch of
one image and on 1x1 pooled maps, where batch statistics do not exist.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def num_groups(channels: int, most: int = 8) -> int:
    """GroupNorm groups for ``channels``: the largest divisor of ``channels`` up to ``most``."""
    return math.gcd(channels, most)


def num_heads(channels: int, most: int = 8, min_head_dim: int = 32) -> int:
    """Attention heads for ``channels``: the largest divisor up to ``most`` whose head width is
    at least ``min_head_dim`` (1 when none is). Any width works: 64 -> 2, 96 -> 3, 100 -> 2.
    Wide heads because narrow ones (8 channels) make attention several times slower on the
    CPU for no gain at these widths."""
    for heads in range(most, 0, -1):
        if channels % heads == 0 and channels // heads >= min_head_dim:
            return heads
    return 1


def norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups(channels), channels)


class ConvNormAct(nn.Sequential):
    """Conv2d -> GroupNorm -> GELU ("same" padding for odd kernels)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, *, groups: int = 1,
                 dilation: int = 1) -> None:
        pad = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, groups=groups, bias=False),
            norm(cout),
            nn.GELU(),
        )


class SepConvBlock(nn.Sequential):
    """1x1 mix (cin -> cout), then depthwise 3x3 and 1x1: a cheap 3x3 receptive field."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            ConvNormAct(cin, cout, 1),
            ConvNormAct(cout, cout, 3, groups=cout),
            ConvNormAct(cout, cout, 1),
        )


class AttentionGate(nn.Module):
    """CBAM-style gate: channel attention (shared MLP on avg- and max-pooled vectors), then
    spatial attention (7x7 conv on the channel mean and max). ``x * ca * sa``; shape kept.

    The pooled MLP has no normalisation (a 1x1 map has no statistics worth normalising).
    """

    def __init__(self, channels: int, reduction: int = 4, kernel: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1)
        )
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = F.adaptive_avg_pool2d(x, 1)
        mx = F.adaptive_max_pool2d(x, 1)
        x = x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


def resize_to(x: torch.Tensor, ref: torch.Tensor | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``ref`` (a tensor or ``(H, W)``)."""
    size = tuple(ref.shape[-2:]) if isinstance(ref, torch.Tensor) else tuple(ref)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
