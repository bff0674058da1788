"""Data loading against the training step, images per second side by side (a script, not a test).

1. Cold: decode a JPEG and resize it to the training size (what a loader without a cache does
   for every image of every epoch), one thread — a worker's rate; and the cache build
   (`load_split`, several threads), which pays that once.
2. Cached: the training loader of `DataModule` (memory-mapped arrays + augmentation + collate),
   with 0 workers and with several.
3. The training step for the same batch: CamoXpert forward + loss + backward + AdamW step, the
   whole model trained (stage 2), ImageNet normalisation on the device included.

The loader is not the bottleneck when the cached loader's rate is above the step's.
Source images are synthetic JPEGs of ``--source-size`` px (COD10K's are ~1000 x 700).

    python benchmarks/bench_loader.py [--device cpu|cuda] [--size 384] [--quick]

`run(quick, device)` returns rows ``{"name", "value", "unit", "goal", "command"}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from camotune.trainer.cache import decode_pair, load_split
from camotune.trainer.data import find_train, normalize_batch
from camotune.trainer.loaders import DataModule
from camotune.trainer.synth import synth


def _loader_rate(data: DataModule, batch: int, epochs: int) -> float:
    data.train_loader(0, batch)  # start workers outside the timing (they persist)
    for _ in data.train_loader(0, batch):
        pass
    t0, n = time.perf_counter(), 0
    for epoch in range(1, epochs + 1):
        for images, _ in data.train_loader(epoch, batch):
            n += images.shape[0]
    return n / (time.perf_counter() - t0)


def _step_rate(backbone: str, size: int, batch: int, device: str, steps: int,
               warmup: int = 3) -> tuple[float, str]:
    """Images/s of one full training step; the second value says which model was timed."""
    dev = torch.device(device)
    try:
        from camotune.model import UNFREEZE_LEVELS, CamoXpert

        model = CamoXpert(backbone=backbone, pretrained=False).to(dev)
        model.set_backbone_trainable(UNFREEZE_LEVELS)
        what = f"CamoXpert({backbone})"

        def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = model(x)
            return out.logits, out.aux_loss
    except ImportError:  # the model package is not there: time the bare backbone
        import timm

        model = timm.create_model(backbone, pretrained=False, features_only=True).to(dev)
        what = f"timm {backbone} features_only (no CamoXpert)"

        def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = model(x)[0].mean(1, keepdim=True)
            return torch.nn.functional.interpolate(f, size=x.shape[-2:]), f.new_zeros(())

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=dev)
    masks = torch.randint(0, 2, (batch, 1, size, size), device=dev).float()
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")

    def step() -> None:
        with amp:
            logits, aux = forward(normalize_batch(images))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), masks)
            loss = loss + 0.1 * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0), what


def run(quick: bool = True, device: str = "cpu", *, size: int = 384, batch: int = 8,
        source_size: int = 768, workers: int = 0, backbones: tuple[str, ...] = ()) -> list[dict]:
    """Measure and return rows ``{"name", "value", "unit", "goal", "command"}``; the ratio rows
    (cached and cold rates over the fastest timed step) also carry ``key`` and ``met``."""
    n_images = 48 if quick else 256
    workers = workers or min(8, os.cpu_count() or 1)
    backbones = backbones or (("edgenext_xx_small", "edgenext_base") if device == "cuda"
                              else ("edgenext_xx_small",))
    command = (f"python benchmarks/bench_loader.py --device {device} --size {size} "
               f"--batch {batch} --workers {workers}" + (" --quick" if quick else ""))
    ips = "images/s"
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = synth(Path(tmp) / "data", n_train=n_images, n_test=0, size=source_size,
                     noncam=0)
        samples = find_train(root)

        t0 = time.perf_counter()
        for s in samples[:16]:
            decode_pair(s, size)
        cold_one = 16 / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        load_split(samples, size, Path(tmp) / "cache")
        build = len(samples) / (time.perf_counter() - t0)

        common = dict(img_size=size, val_fraction=0.1, seed=0, aug_strength=1.0,
                      cache_dir=Path(tmp) / "cache")
        epochs = 2 if quick else 4
        cached0 = _loader_rate(DataModule(root, num_workers=0, **common), batch, epochs)
        cached_w = _loader_rate(DataModule(root, num_workers=workers, **common), batch, epochs)
    rows += [
        {"name": f"cold decode+resize {source_size}->{size} (1 thread)", "value": cold_one,
         "unit": ips, "goal": "reference: a cache-less loader worker", "command": command},
        {"name": f"cache build (load_split, {min(8, os.cpu_count() or 1)} threads)",
         "value": build, "unit": ips, "goal": "paid once per dataset and size",
         "command": command},
        {"name": "cached loader + augmentation, 0 workers", "value": cached0, "unit": ips,
         "goal": "> training step", "command": command},
        {"name": f"cached loader + augmentation, {workers} workers", "value": cached_w,
         "unit": ips, "goal": "> training step", "command": command},
    ]
    steps = []
    for backbone in backbones:
        rate, what = _step_rate(backbone, size, batch, device, 3 if quick else 20,
                                warmup=1 if quick and device == "cpu" else 3)
        steps.append((rate, what))
        rows.append({"name": f"training step {what} batch {batch} ({device})", "value": rate,
                     "unit": ips, "goal": "< cached loader", "command": command})
    step, what = max(steps)
    tag = f"{size} px, batch {batch}, step of {what} on {device} at {step:.1f} images/s"
    rows += [
        {"key": "loader_cached_over_step", "name": f"cached loader (0 workers) / training step "
         f"({tag})", "value": cached0 / step, "unit": "x", "goal": ">= 3",
         "met": cached0 / step >= 3, "command": command},
        {"key": "loader_cached_workers_over_step", "name": f"cached loader ({workers} workers) / "
         f"training step ({tag})", "value": cached_w / step, "unit": "x", "goal": ">= 3",
         "met": cached_w / step >= 3, "command": command},
        {"key": "loader_cold_over_step", "name": f"cold decode (1 thread) / training step ({tag})",
         "value": cold_one / step, "unit": "x",
         "goal": "informational (< 1: a cache-less worker would starve the step)", "met": None,
         "command": command},
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--size", type=int, default=384, help="training image side")
    p.add_argument("--batch", type=int, default=8, help="images per step")
    p.add_argument("--source-size", type=int, default=768, help="side of the source JPEGs")
    p.add_argument("--workers", type=int, default=0, help="loader workers (default: CPUs, <= 8)")
    p.add_argument("--backbone", action="append", default=[],
                   help="timed backbone (repeatable; default xx_small, and base on CUDA)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    p.add_argument("--quick", action="store_true", help="48 images, 2 epochs, 3 steps")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = run(a.quick, a.device, size=a.size, batch=a.batch, source_size=a.source_size,
               workers=a.workers, backbones=tuple(a.backbone))
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['value']:10.1f} {r['unit']:<9} goal: {r['goal']}")
    sys.stdout.flush()
    print(f"command: {rows[0]['command']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
