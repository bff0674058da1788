"""AdamW parameter groups and the per-step LR schedule.

The optimizer is built once, with the backbone already in it (its parameters have no gradient
while frozen, so AdamW skips them and keeps no state), so the two stages and every progressive
unfreeze share one optimizer: moments and the schedule stay continuous, also across a resume.

Each group carries a ``scale`` (1 for the decoder and experts, ``--backbone-lr-scale`` for the
backbone) and its LR is ``stage_lr x scale x schedule(step)``: warmup in optimizer steps, then
cosine (or constant) down to ``--min-lr`` over the whole run's optimizer steps.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, *, weight_decay: float, backbone_lr_scale: float) -> list[dict]:
    """Four AdamW groups: {head, backbone} x {decayed, not decayed (norms, biases)}."""
    backbone_ids = {id(p) for p in model.backbone_parameters()}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        part = "backbone" if id(p) in backbone_ids else "head"
        decayed = p.ndim > 1
        groups.setdefault((part, decayed), []).append(p)
    out = []
    for (part, decayed), params in sorted(groups.items()):
        out.append({
            "params": params,
            "name": f"{part}{'' if decayed else '_no_decay'}",
            "part": part,
            "scale": backbone_lr_scale if part == "backbone" else 1.0,
            "weight_decay": weight_decay if decayed else 0.0,
            "lr": 0.0,
        })
    return out


def schedule_factor(step: int, *, total: int, warmup: int, kind: str, min_ratio: float) -> float:
    """Multiplier of the stage LR at optimizer step ``step`` (0-based) of ``total``.

    Linear warmup over ``warmup`` steps (from 1/warmup to 1), then ``cosine`` from 1 down to
    ``min_ratio`` at the last step, or ``constant`` 1. Steps past ``total`` keep the last value.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class StepSchedule:
    """Sets every group's LR before each optimizer step; its state is the step count."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int,
                 kind: str, min_lr: float) -> None:
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.kind = kind
        self.min_lr = min_lr
        self.step_count = 0
        self.stage_lr = 0.0
        self.backbone_on = False

    def set_stage(self, stage_lr: float, *, backbone_on: bool) -> None:
        """Enter a stage: its resolved decoder LR, and whether the backbone groups train."""
        self.stage_lr = stage_lr
        self.backbone_on = backbone_on
        self.apply()

    def lr_now(self) -> float:
        """The decoder LR of the next optimizer step."""
        min_ratio = min(1.0, self.min_lr / self.stage_lr) if self.stage_lr > 0 else 0.0
        return self.stage_lr * schedule_factor(
            self.step_count, total=self.total_steps, warmup=self.warmup_steps, kind=self.kind,
            min_ratio=min_ratio)

    def apply(self) -> None:
        lr = self.lr_now()
        for g in self.optimizer.param_groups:
            on = g["part"] == "head" or self.backbone_on
            g["lr"] = lr * g["scale"] if on else 0.0

    def step(self) -> None:
        """Call after each optimizer step."""
        self.step_count += 1
        self.apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
