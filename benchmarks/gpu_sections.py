"""The measurements of benchmarks/gpu_bench.py: the forward+backward ceiling, camotune's training
step against it, and the largest batch that fits. torch, timm and camotune's source tree only
(`gpulib.use_source_tree` must have run before these functions are called).

Every figure is images per second on synthetic tensors: ImageNet-like ``randn`` images and
random {0, 1} masks, created on the device (except the host-input variant of the step, which
starts from pinned uint8 batches as the data loader yields them).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from typing import Any

import gpulib
import torch

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "bf16+compile": torch.bfloat16}


def build_model(backbone: str, device: torch.device) -> torch.nn.Module:
    """CamoXpert with the TrainConfig defaults (7 experts, top-2, no deep supervision), random
    weights, every parameter trainable (stage 2), channels_last on CUDA as `fit` does."""
    from camotune.model import UNFREEZE_LEVELS, CamoXpert

    torch.manual_seed(0)
    model = CamoXpert(backbone, pretrained=False).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model.set_backbone_trainable(UNFREEZE_LEVELS)
    return model.train()


def inputs(batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, 3, size, size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 1, size, size, device=device) > 0.7).float()
    return x, y


def fwd_bwd(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None
            ) -> Callable[[], int]:
    """One forward+backward of ``x`` (loss: mean logit + the MoE auxiliary loss): the ceiling's
    unit of work. Returns a callable giving the images it processed."""
    from camotune.trainer.step import autocast

    def step() -> int:
        model.zero_grad(set_to_none=True)
        with autocast(x.device, dtype):
            out = model(x)
            loss = out.logits.float().mean() + out.aux_loss.float()
        loss.backward()
        return x.shape[0]

    return step


def make_trainer(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None,
                 accumulation: int):
    """camotune's `GradientAccumulator` as `fit` builds it: CamoLoss, AdamW over `param_groups` (fused on
    CUDA), gradient clipping at 1, ``accumulation`` micro-batches per optimizer step."""
    from camotune.trainer.losses import CamoLoss
    from camotune.trainer.optim import param_groups
    from camotune.trainer.step import GradientAccumulator

    groups = param_groups(model, weight_decay=0.01, backbone_lr_scale=0.1)
    for g in groups:
        g["lr"] = 1e-4 * g["scale"]
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(groups, lr=1e-4, **fused)
    return GradientAccumulator(model, opt, CamoLoss(), device=device, amp_dtype=dtype,
                   accumulation_steps=accumulation, grad_clip=1.0)


def train_chunk(trainer, batches: Callable[[], Any], n_micro: int, batch: int
                ) -> Callable[[], int]:
    """``n_micro`` micro-batches through `GradientAccumulator.run_epoch` (whole accumulation groups)."""
    from camotune.trainer.step import StepStats

    def step() -> int:
        stats = StepStats(trainer.device)
        trainer.run_epoch(itertools.islice(batches(), n_micro), stats, n_micro=n_micro)
        return n_micro * batch

    return step


def guarded(fn: Callable[[], float], device: torch.device) -> float | str:
    """``fn()``, or "oom" when it runs out of memory (memory is released either way)."""
    try:
        return fn()
    except Exception as exc:  # only OOM is turned into a value; anything else propagates
        if not gpulib.is_oom(exc):
            raise
        return "oom"
    finally:
        gpulib.free_memory(device)


def ceiling(model, s: dict, device: torch.device, deadline: float) -> dict[str, dict]:
    """precision -> {batch: images/s | "oom" | "skipped"} for the eager precisions."""
    out: dict[str, dict] = {}
    for precision in [p for p in s["precisions"] if p != "bf16+compile"]:
        out[precision] = {}
        for batch in s["batches"]:
            if time.monotonic() > deadline:
                out[precision][batch] = "skipped"
                continue

            def measure(batch=batch, precision=precision) -> float:
                x, _ = inputs(batch, s["size"], device)
                return gpulib.rate(fwd_bwd(model, x, DTYPES[precision]), device,
                                   seconds=s["measure_s"])

            out[precision][batch] = guarded(measure, device)
    model.zero_grad(set_to_none=True)
    return out


def training_step(model, s: dict, device: torch.device, deadline: float) -> list[dict]:
    """camotune's step (GradientAccumulator + CamoLoss + AdamW, accumulation) per precision and batch, with
    the host syncs of one chunk; plus, in bf16 at the largest step batch, the same step fed
    from pinned host uint8 batches through `fit`'s `device_batches` (copy + normalise)."""
    precisions = ["bf16"] if s["quick"] else ["bf16", "fp32"]
    rows = []
    accum = s["accumulation"]
    n_micro = 2 * accum
    for precision, batch in itertools.product(precisions, s["step_batches"]):
        if time.monotonic() > deadline:
            rows.append({"precision": precision, "batch": batch, "input": "device",
                         "images_per_s": "skipped"})
            continue
        trainer = make_trainer(model, device, DTYPES[precision], accum)
        x, y = inputs(batch, s["size"], device)
        step = train_chunk(trainer, lambda x=x, y=y: itertools.repeat((x, y)), n_micro, batch)
        row = {"precision": precision, "batch": batch, "input": "device",
               "accumulation": accum}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        row["images_per_s"] = guarded(
            lambda step=step: gpulib.rate(step, device, seconds=s["measure_s"], warmup=1),
            device)
        if device.type == "cuda" and row["images_per_s"] != "oom":
            row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            with gpulib.SyncCounter(device) as syncs:
                step()
            gpulib.sync(device)  # outside: an explicit synchronize is not the step's
            row["syncs_per_micro_batch"] = syncs.total / n_micro
            row["sync_sites"] = syncs.sites
        rows.append(row)
        del trainer, x, y, step
        gpulib.free_memory(device)
    if precisions and s["step_batches"] and time.monotonic() < deadline:
        rows.append(_host_input_step(model, s, device, max(s["step_batches"]), n_micro))
    model.zero_grad(set_to_none=True)
    return rows


def _host_input_step(model, s: dict, device: torch.device, batch: int, n_micro: int) -> dict:
    row: dict[str, Any] = {"precision": "bf16", "batch": batch, "input": "host uint8 (pinned)",
                           "accumulation": s["accumulation"]}
    try:
        from camotune.trainer.validate import device_batches
    except ImportError as exc:  # trainer.data needs numpy
        row["images_per_s"] = f"not run: {exc}"
        return row
    pin = device.type == "cuda"
    size = s["size"]
    host = [(torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8),
             (torch.rand(batch, size, size) > 0.7).to(torch.uint8)) for _ in range(4)]
    if pin:
        host = [(a.pin_memory(), b.pin_memory()) for a, b in host]
    trainer = make_trainer(model, device, DTYPES["bf16"], s["accumulation"])

    def batches():
        return device_batches(itertools.cycle(host), device, device.type == "cuda")

    step = train_chunk(trainer, batches, n_micro, batch)
    row["images_per_s"] = guarded(
        lambda: gpulib.rate(step, device, seconds=s["measure_s"], warmup=1), device)
    if device.type == "cuda" and row["images_per_s"] != "oom":
        with gpulib.SyncCounter(device) as syncs:
            step()
        gpulib.sync(device)
        row["syncs_per_micro_batch"] = syncs.total / n_micro
        row["sync_sites"] = syncs.sites
    trainer = step = None
    gpulib.free_memory(device)
    return row


def _fits(model, device: torch.device, size: int, batch: int) -> tuple[bool, float | None]:
    """Whether two bf16 training steps (AdamW state included) at ``batch`` fit; peak GiB."""
    trainer = make_trainer(model, device, DTYPES["bf16"], 1)
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        x, y = inputs(batch, size, device)
        train_chunk(trainer, lambda: itertools.repeat((x, y)), 2, batch)()
        gpulib.sync(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        return True, peak
    except Exception as exc:
        if not gpulib.is_oom(exc):
            raise
        return False, None
    finally:
        x = y = None
        trainer.optimizer.zero_grad(set_to_none=True)
        model.zero_grad(set_to_none=True)
        del trainer
        gpulib.free_memory(device)


def max_batch(model, s: dict, device: torch.device, deadline: float) -> list[dict]:
    """Largest bf16 training batch per image size: a linear memory model from two small
    probes predicts it, then grow/bisect around the prediction, ``maxb_probes`` probes at most
    (the two small ones included). cudnn autotuning is off meanwhile (new shape every probe)."""
    rows = []
    bench = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        for size in s["maxb_sizes"]:
            if time.monotonic() > deadline:
                rows.append({"size": size, "max_batch": "skipped"})
                continue
            rows.append(_search(model, s, device, size, deadline))
    finally:
        torch.backends.cudnn.benchmark = bench
    return rows


def _search(model, s: dict, device: torch.device, size: int, deadline: float) -> dict:
    probes: list[tuple[int, bool, float | None]] = []

    def probe(b: int) -> bool:
        ok, peak = _fits(model, device, size, b)
        probes.append((b, ok, peak))
        return ok

    lo, hi = 0, None  # largest batch known to fit, smallest known not to
    cap, budget = s["maxb_cap"], s["maxb_probes"]
    slope = intercept = None
    guess = s["maxb_start"]
    if device.type == "cuda":
        small = (4, 8)
        for b in small:
            if not probe(b):
                hi = b
                break
            lo = b
        peaks = [p for _, ok, p in probes if ok]
        guess = lo
        if len(peaks) == 2:
            slope = max((peaks[1] - peaks[0]) / (small[1] - small[0]), 1e-6)
            intercept = peaks[0] - slope * small[0]
            free, _ = torch.cuda.mem_get_info(device)
            usable = (free + torch.cuda.memory_allocated(device)) / 2**30
            guess = int((0.95 * usable - intercept) / slope)
    b = max(lo + 1, min(cap, guess))
    first = True
    while (len(probes) < budget and time.monotonic() < deadline and lo < b <= cap
           and (hi is None or b < hi)):
        if probe(b):
            lo = b
            if b == cap:
                break
            if hi is None:  # still growing: double without a memory model, else +5%
                b = max(lo + 1, min(cap, b * 2 if slope is None else math.ceil(b * 1.05)))
            else:
                b = (lo + hi) // 2
        else:
            hi = b
            # the linear model is usually close: try 10% below it before bisecting
            near = int(b * 0.9)
            b = near if first and slope is not None and near > lo else (lo + hi) // 2
        first = False
        if hi is not None and hi - lo <= max(1, lo // 32):
            break
    peak_at_lo = max((p for bb, ok, p in probes if ok and bb == lo), default=None)
    return {"size": size, "max_batch": lo, "first_oom": hi, "cap": cap,
            "probes": [(bb, ok) for bb, ok, _ in probes], "peak_gib_at_max": peak_at_lo,
            "gib_per_image": slope, "fixed_gib": intercept}
