"""The expert kinds of a CamoXpert mixture-of-experts layer.

Each expert maps ``B x C x H x W`` to the same shape and is cheap (depthwise or grouped
spatial filtering followed by a 1x1 mix), because a layer evaluates all of its experts densely
(see `camotune.model.moe`). The kinds look at camouflage from different angles:

- ``texture``: dilated depthwise 3x3 (dilation 2) -- fine repeated patterns.
- ``attention``: multi-head self-attention inside 8x8 windows, with a depthwise-conv position
  term; heads from `num_heads` so any width works (heads of >= 32 channels: 64 -> 2, 100 -> 2 of 50).
- ``frequency``: FFT of the map, a learnable per-channel gain over 8 radial frequency bands
  (linearly interpolated, so any input size works), inverse FFT. Computed in float32 because
  the FFT has no bfloat16 kernel.
- ``edge``: depthwise Sobel-x/Sobel-y filters (initialised to Sobel, then learnt), gradient
  magnitude -- the boundary cues that give camouflaged objects away.
- ``context``: pooling pyramid (1, 2, 4 bins) concatenated with the input -- scene context.
- ``contrast``: centre (3x3) minus surround (quarter-resolution mean) -- local saliency.
- ``conv``: a plain grouped 3x3 convolution.

With more experts than kinds the kinds repeat (``texture, attention, ..., conv, texture, ...``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from camotune.model.blocks import ConvNormAct, norm, num_heads

KINDS = ("texture", "attention", "frequency", "edge", "context", "contrast", "conv")


class TextureExpert(nn.Sequential):
    def __init__(self, dim: int) -> None:
        super().__init__(ConvNormAct(dim, dim, 3, groups=dim, dilation=2), nn.Conv2d(dim, dim, 1))


class ConvExpert(nn.Sequential):
    def __init__(self, dim: int) -> None:
        super().__init__(ConvNormAct(dim, dim, 3, groups=math.gcd(dim, 4)), nn.Conv2d(dim, dim, 1))


class WindowAttentionExpert(nn.Module):
    """Self-attention within non-overlapping ``window`` x ``window`` tiles. Maps whose sides are
    not multiples of the window are zero-padded and the padded keys masked out."""

    def __init__(self, dim: int, window: int = 8) -> None:
        super().__init__()
        self.heads = num_heads(dim)
        self.window = window
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = norm(dim)
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ws_h, ws_w = min(self.window, h), min(self.window, w)
        pad_h, pad_w = (-h) % ws_h, (-w) % ws_w
        y = self.norm(x + self.pos(x))
        if pad_h or pad_w:
            y = F.pad(y, (0, pad_w, 0, pad_h))
        nh, nw = (h + pad_h) // ws_h, (w + pad_w) // ws_w
        hd = c // self.heads
        qkv = self.qkv(y).reshape(b, 3, self.heads, hd, nh, ws_h, nw, ws_w)
        # -> 3 x B x windows x heads x tokens x head_dim (SDPA accepts extra leading dims)
        qkv = qkv.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, b, nh * nw, self.heads, ws_h * ws_w, hd)
        q, k, v = qkv.unbind(0)
        mask = None
        if pad_h or pad_w:  # decided from shapes, not data: no host sync
            valid = F.pad(x.new_ones(1, 1, h, w, dtype=torch.bool), (0, pad_w, 0, pad_h))
            valid = valid.reshape(nh, ws_h, nw, ws_w).permute(0, 2, 1, 3).reshape(nh * nw, 1, 1, -1)
            mask = valid
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        o = o.reshape(b, nh, nw, self.heads, ws_h, ws_w, hd).permute(0, 3, 6, 1, 4, 2, 5)
        o = o.reshape(b, c, h + pad_h, w + pad_w)[:, :, :h, :w]
        return self.proj(o)


class FrequencyExpert(nn.Module):
    """Learnable radial band-pass filter per channel, applied in the Fourier domain."""

    def __init__(self, dim: int, bands: int = 8) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(dim, bands) + 0.02 * torch.randn(dim, bands))
        self.out = nn.Sequential(norm(dim), nn.GELU(), nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        bands = self.gain.shape[1]
        with torch.autocast(device_type=x.device.type, enabled=False):
            spec = torch.fft.rfft2(x.float(), norm="ortho")
            fy = torch.fft.fftfreq(h, device=x.device)
            fx = torch.fft.rfftfreq(w, device=x.device)
            radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) / math.sqrt(0.5)  # 0..1
            pos = radius.clamp(max=1.0) * (bands - 1)
            lo = pos.floor().long()
            hi = (lo + 1).clamp(max=bands - 1)
            t = pos - lo
            gain = self.gain.float()
            response = gain[:, lo] * (1 - t) + gain[:, hi] * t  # C x H x (W//2+1)
            y = torch.fft.irfft2(spec * response, s=(h, w), norm="ortho")
        return self.out(y.to(x.dtype))


class EdgeExpert(nn.Module):
    """Depthwise Sobel gradients (learnable, Sobel-initialised) -> magnitude -> 1x1 mix."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        # two depthwise convs rather than one with a channel multiplier of 2: the latter has
        # no fast CPU kernel
        self.gx = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.gy = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        sx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
        with torch.no_grad():
            self.gx.weight.copy_(sx.expand_as(self.gx.weight))  # unit derivative along x
            self.gy.weight.copy_(sx.t().expand_as(self.gy.weight))
        self.out = nn.Sequential(norm(dim), nn.GELU(), nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx, gy = self.gx(x), self.gy(x)
        return self.out(torch.sqrt(gx * gx + gy * gy + 1e-6))


class ContextExpert(nn.Module):
    """Pooling pyramid: average pools to 1x1, 2x2, 4x4, a 1x1 conv each (no norm: tiny maps),
    upsampled and concatenated with the input, then mixed back to ``dim``."""

    def __init__(self, dim: int, bins: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        red = max(dim // 4, 8)
        self.bins = bins
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dim, red, 1), nn.GELU()) for _ in bins
        )
        self.mix = nn.Sequential(ConvNormAct(dim + red * len(bins), dim, 1), nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        parts = [x]
        for b, branch in zip(self.bins, self.branches, strict=True):
            pooled = branch(F.adaptive_avg_pool2d(x, b))
            parts.append(upsample_small(pooled, size))
        return self.mix(torch.cat(parts, dim=1))


def upsample_small(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of a tiny map to ``size`` (a 1x1 map is broadcast).

    Done in float32: the backward of a large upsampling accumulates with atomics, which are
    an order of magnitude slower in bfloat16 on CUDA (measured: the context expert took 13 ms
    of a 22 ms MoE layer at 96x96 before this).
    """
    if x.shape[-2:] == (1, 1):
        return x.expand(*x.shape[:2], *size)
    up = F.interpolate(x.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return up.to(x.dtype)


class ContrastExpert(nn.Module):
    """Centre-surround contrast: a learnable depthwise 3x3 centre (initialised to the 3x3
    mean) minus the surround (the mean over ~4x4 cells at quarter resolution, bilinearly
    upsampled), then GroupNorm, GELU, 1x1. Large box filters at full resolution have no fast
    CPU kernel; the quarter-resolution surround costs almost nothing."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.centre = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        nn.init.constant_(self.centre.weight, 1 / 9)
        self.out = nn.Sequential(norm(dim), nn.GELU(), nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        coarse = F.adaptive_avg_pool2d(x, (max(1, h // 4), max(1, w // 4)))
        surround = upsample_small(coarse, (h, w))
        return self.out(self.centre(x) - surround)


_BUILDERS = {
    "texture": TextureExpert,
    "attention": WindowAttentionExpert,
    "frequency": FrequencyExpert,
    "edge": EdgeExpert,
    "context": ContextExpert,
    "contrast": ContrastExpert,
    "conv": ConvExpert,
}


def expert_kinds(num_experts: int) -> list[str]:
    """The kind of each of ``num_experts`` experts, cycling through `KINDS`."""
    return [KINDS[i % len(KINDS)] for i in range(num_experts)]


def make_experts(dim: int, num_experts: int) -> nn.ModuleList:
    return nn.ModuleList(_BUILDERS[kind](dim) for kind in expert_kinds(num_experts))
