"""The training step: micro-batch forward/backward, gradient accumulation, clipping, the
optimizer and EMA updates, precision handling.

Only torch is imported here, so the step runs on a machine that has torch and timm alone (the
GPU benchmark uses it that way). Nothing in `micro_step`/`optimizer_step` reads a value back to
the host: running sums live on the device and are read once per logging interval.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


def resolve_device(name: str) -> torch.device:
    """``auto`` is the GPU when one is visible (Ray sets CUDA_VISIBLE_DEVICES), else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from camotune.errors import BadInput

        raise BadInput("--device cuda: no CUDA device is visible")
    return torch.device(name)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` on ``device`` (None = full fp32).

    ``auto`` is bf16 on a GPU that supports it, fp16 on an older GPU, fp32 on the CPU.
    """
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class StepStats:
    """Device-side running sums over an epoch; read with `read` (one host sync)."""

    device: torch.device
    loss_sum: torch.Tensor = field(init=False)
    grad_norm_sum: torch.Tensor = field(init=False)
    nonfinite: torch.Tensor = field(init=False)
    micro_batches: int = 0
    optimizer_steps: int = 0

    def __post_init__(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device)
        self.grad_norm_sum = torch.zeros((), device=self.device)
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)

    def read(self) -> dict[str, float | bool]:
        values = torch.stack([self.loss_sum, self.grad_norm_sum, self.nonfinite.float()]).tolist()
        return {
            "train_loss": values[0] / max(1, self.micro_batches),
            "grad_norm": values[1] / max(1, self.optimizer_steps),
            "nonfinite": bool(values[2]),
        }


class GradientAccumulator:
    """Accumulates ``accumulation_steps`` micro-batches per optimizer step.

    ``loss_fn(out, mask) -> (total, terms)``. Each micro-batch's loss is divided by the number of
    micro-batches in its accumulation group (the last group of an epoch may be shorter), so k
    micro-batches give the update of one batch k times larger (for a model without BatchNorm).
    ``on_step`` runs after every optimizer step (the LR schedule and the EMA hook in here).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable,
        *,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        accumulation_steps: int,
        grad_clip: float,
        on_step: Callable[[], None] | None = None,
        trainable_params: Callable[[], list[nn.Parameter]] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.device = device
        self.amp_dtype = amp_dtype
        self.accumulation_steps = accumulation_steps
        self.grad_clip = grad_clip
        self.on_step = on_step
        self._trainable = trainable_params or (
            lambda: [p for p in model.parameters() if p.requires_grad]
        )
        # fp16 needs loss scaling; bf16 and fp32 do not.
        self.scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    def run_epoch(self, batches, stats: StepStats, *, n_micro: int,
                  on_interval: Callable[[StepStats], None] | None = None,
                  interval: int = 50) -> StepStats:
        """Train over ``batches`` ((images, masks) already on the device, normalised), ``n_micro``
        of them. ``on_interval`` is called every ``interval`` micro-batches and at the end."""
        self.optimizer.zero_grad(set_to_none=True)
        k = self.accumulation_steps
        for i, (images, masks) in enumerate(batches):
            group_start = (i // k) * k
            group_size = min(k, n_micro - group_start)
            last_of_group = i - group_start + 1 == group_size
            self.micro_step(images, masks, stats, scale=1.0 / group_size, sync=last_of_group)
            if last_of_group:
                self.optimizer_step(stats)
            if on_interval is not None and ((i + 1) % interval == 0 or i + 1 == n_micro):
                on_interval(stats)
        return stats

    def micro_step(self, images: torch.Tensor, masks: torch.Tensor, stats: StepStats, *,
                   scale: float, sync: bool = True) -> None:
        """Forward and backward of one micro-batch, its loss weighted by ``scale``. Under DDP,
        ``sync=False`` skips the gradient all-reduce (all but the last micro-batch of a group)."""
        no_sync = getattr(self.model, "no_sync", None)
        with contextlib.nullcontext() if sync or no_sync is None else no_sync():
            with autocast(self.device, self.amp_dtype):
                out = self.model(images)
                total, _ = self.loss_fn(out, masks)
            loss = total.float() * scale
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        stats.loss_sum += total.detach().float()
        stats.nonfinite |= ~torch.isfinite(total.detach())
        stats.micro_batches += 1

    def optimizer_step(self, stats: StepStats) -> None:
        params = self._trainable()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros(
            (), device=self.device)
        stats.grad_norm_sum += norm.detach().float()
        if self.scaler is not None:
            # A skipped fp16 overflow step is normal loss scaling, not a divergence.
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            stats.nonfinite |= ~torch.isfinite(norm.detach())
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        stats.optimizer_steps += 1
        if self.on_step is not None:
            self.on_step()
