"""The time estimate of `camotune why --dry-run`: one batch forward and backward of a config,
timed on this machine, scaled by the steps each trial takes."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence

from camotune.trainer.config import TrainConfig

__all__ = ["batch_seconds", "estimate_seconds", "trial_seconds"]


def batch_seconds(cfg: TrainConfig, threads: int) -> float:
    """Seconds of one forward + backward of a ``cfg.batch_size`` x ``cfg.img_size`` batch on
    the CPU with ``threads`` threads (random weights: the same work as pretrained ones). The
    first pass warms up untimed when the batch is small."""
    import torch

    from camotune.model import build_model
    from camotune.trainer.losses import loss_from_config

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        probe = dataclasses.replace(cfg, pretrained=False, pretrained_path="")
        model = build_model(probe)
        model.set_backbone_trainable(0)
        model.train()
        loss_fn = loss_from_config(probe)
        size, n = cfg.img_size, cfg.batch_size
        images = torch.randn(n, 3, size, size)
        masks = (torch.rand(n, 1, size, size) > 0.7).float()

        def once() -> float:
            start = time.perf_counter()
            total, _ = loss_fn(model(images), masks)
            total.backward()
            model.zero_grad(set_to_none=True)
            return time.perf_counter() - start

        first = once()
        return once() if first < 2.0 else first
    finally:
        torch.set_num_threads(before)


def trial_seconds(cfg: TrainConfig, per_batch: float, n_train: int, n_val: int) -> float:
    """Training steps of every epoch x ``per_batch``, plus validation (a forward pass is about
    a third of a forward + backward) per epoch."""
    per_image = per_batch / cfg.batch_size
    steps = math.ceil(n_train / cfg.batch_size)
    return cfg.epochs * (steps * per_batch + n_val * per_image / 3)


def estimate_seconds(configs: Sequence[TrainConfig], probes: dict[tuple[int, int], float],
                     n_train: int, n_val: int, concurrency: int) -> float:
    """Wall seconds for every config in ``configs`` run ``concurrency`` at a time; ``probes``
    maps (batch size, image size) to `batch_seconds`, nearest probe scaled by pixels and
    batch."""
    total = 0.0
    for cfg in configs:
        key = (cfg.batch_size, cfg.img_size)
        if key in probes:
            per_batch = probes[key]
        else:  # scale the nearest probe by images x pixels
            (b, s), t = min(probes.items(), key=lambda kv: abs(kv[0][1] - cfg.img_size))
            per_batch = t * (cfg.batch_size / b) * (cfg.img_size / s) ** 2
        total += trial_seconds(cfg, per_batch, n_train, n_val)
    return total / max(1, concurrency)


def default_concurrency(cpus_per_trial: float, max_concurrent: int | None) -> int:
    """Trials at once on this machine: its CPUs over ``cpus_per_trial``, capped by
    ``max_concurrent``."""
    fits = max(1, int((os.cpu_count() or 1) // max(cpus_per_trial, 1e-9)))
    return min(fits, max_concurrent) if max_concurrent else fits
