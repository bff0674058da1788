"""`fit` against a bare PyTorch loop over the same model, data and precision (a script).

Both train the whole model (stage 2 from the first epoch, no accumulation, no EMA) on the same
`DataModule` batches. Throughput is ``imgs_per_s``: training images of
the epoch / wall time of its training loop, data loading included, validation excluded. For
`fit` that is the figure it writes to history.csv; the bare loop measures the same span around
its own loop (DataLoader -> device -> forward -> CamoLoss -> backward -> AdamW step).

The two alternate epoch by epoch: `fit`'s ``report`` callback runs one bare-loop epoch after
each of `fit`'s epochs, so a noisy machine slows both alike. The first epoch of each is left out
(allocator and cache warm-up) and the medians of the rest are compared. `fit` still computes
the gradient norm (a logged metric) with clipping off; that cost is part of what is measured.

Host syncs: during `fit`'s first training epoch, ``Tensor.item/tolist/cpu/numpy`` and
``bool/float/int(tensor)`` calls are counted. Calls made from camotune's own code are compared
with the logging intervals of the epoch (goal: at most one read per interval); calls inside
torch itself (e.g. AdamW's CPU step counter) are counted apart: they do not happen on the GPU
path (fused AdamW).

    python benchmarks/bench_fit.py [--quick] [--device cpu|cuda] [--threads 1]

`run(quick, device)` returns the rows for the suite runner (benchmarks/run.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import benchlib
import torch

from camotune.model import UNFREEZE_LEVELS, build_model
from camotune.trainer.config import TrainConfig
from camotune.trainer.losses import loss_from_config
from camotune.trainer.step import autocast, resolve_amp
from camotune.trainer.validate import device_batches

REPO = Path(__file__).resolve().parents[1]
CAMOTUNE_DIRS = tuple(str(REPO / d) for d in ("camotune", "model", "trainer", "search"))


def bench_config(dataset: Path, cache: Path, *, backbone: str, size: int, batch: int,
                 epochs: int, threads: int, device: str) -> TrainConfig:
    """The training run both loops perform."""
    return TrainConfig(
        dataset_path=str(dataset), cache_dir=str(cache), backbone=backbone, pretrained=False,
        img_size=size, batch_size=batch, accumulation_steps=1, epochs=epochs, stage1_epochs=0,
        num_workers=0, lr=1e-3, grad_clip=0.0, use_ema=False, val_fraction=0.125,
        full_metrics_every=10_000, threads=threads, device=device, seed=0)


class BareLoop:
    """A minimal loop: same model, data and precision as `fit`. `epoch(k)` trains epoch ``k``
    and returns its images/s (training images / wall time of the loop, loading included)."""

    def __init__(self, cfg: TrainConfig, data, device: torch.device) -> None:
        torch.manual_seed(cfg.seed)
        self.cfg, self.data, self.device = cfg, data, device
        self.cuda = device.type == "cuda"
        self.amp = resolve_amp(cfg.amp, device)  # as fit: bf16 (or fp16) on a GPU, fp32 on the CPU
        model = build_model(cfg).to(device)
        if self.cuda:
            model = model.to(memory_format=torch.channels_last)
        model.set_backbone_trainable(UNFREEZE_LEVELS)
        self.model = model.train()
        self.loss_fn = loss_from_config(cfg)
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     **({"fused": True} if self.cuda else {}))

    def epoch(self, epoch: int) -> float:
        loader = self.data.train_loader(epoch, self.cfg.batch_size)
        n = 0
        t0 = time.perf_counter()
        for x, y in device_batches(loader, self.device, self.cuda):  # fed exactly as fit is
            with autocast(self.device, self.amp):
                loss, _ = self.loss_fn(self.model(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            n += x.shape[0]
        if self.cuda:
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)


_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


@contextlib.contextmanager
def count_host_reads() -> Iterator[dict[str, Counter]]:
    """Count tensor reads to the host during the first ``GradientAccumulator.run_epoch`` (one training
    epoch of `fit`): ``ours`` by camotune call site (file:line), ``torch`` by method for calls
    from anywhere else. The patched methods stay installed (inactive) until the block ends."""
    from camotune.trainer import step as step_module

    counts: dict[str, Counter] = {"ours": Counter(), "torch": Counter()}
    active = [False]
    originals = {name: getattr(torch.Tensor, name) for name in _READS}
    original_run_epoch = step_module.GradientAccumulator.run_epoch

    def wrap(name):
        original = originals[name]

        def counted(self, *args, **kwargs):
            if active[0]:
                caller = sys._getframe(1).f_code.co_filename
                if caller.startswith(CAMOTUNE_DIRS):
                    site = f"{Path(caller).relative_to(REPO)}:{sys._getframe(1).f_lineno}"
                    counts["ours"][f"{site} .{name}"] += 1
                else:
                    counts["torch"][name] += 1
            return original(self, *args, **kwargs)

        return counted

    calls = [0]

    def run_epoch(self, *args, **kwargs):
        calls[0] += 1
        active[0] = calls[0] == 1
        try:
            return original_run_epoch(self, *args, **kwargs)
        finally:
            active[0] = False

    for name in _READS:
        setattr(torch.Tensor, name, wrap(name))
    step_module.GradientAccumulator.run_epoch = run_epoch
    try:
        yield counts
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)
        step_module.GradientAccumulator.run_epoch = original_run_epoch


def run(quick: bool = True, device: str = "cpu", *, backbone: str = "edgenext_xx_small",
        size: int = 64, batch: int = 8, threads: int = 1) -> list[dict]:
    """Measure and return rows (see benchlib); the ratio row has key ``fit_over_bare``."""
    from camotune.trainer.loaders import DataModule
    from camotune.trainer.loop import fit
    from camotune.trainer.synth import synth

    n_images, epochs = (72, 9) if quick else (144, 12)
    dev = torch.device(device)
    torch.set_num_threads(threads)
    command = (f"python benchmarks/bench_fit.py --device {device} --threads {threads}"
               + (" --quick" if quick else ""))
    with tempfile.TemporaryDirectory() as tmp:
        root = synth(Path(tmp) / "data", n_train=n_images, n_test=0, size=size, noncam=0)
        cfg = bench_config(root, Path(tmp) / "cache", backbone=backbone, size=size, batch=batch,
                           epochs=epochs, threads=threads, device=device)
        cfg = dataclasses.replace(cfg, checkpoint_dir=str(Path(tmp) / "fit"))
        data = DataModule.from_config(cfg, pin_memory=dev.type == "cuda")  # builds the cache
        bare = BareLoop(cfg, data, dev)
        n_micro = math.ceil(data.n_train / batch)
        bare_all: list[float] = []
        # The bare loop runs one epoch right after each of fit's epochs (from fit's report
        # callback), so both see the same machine state, epoch by epoch.
        with count_host_reads() as counts:
            result = fit(cfg, report=lambda row: bare_all.append(bare.epoch(row["epoch"])))
        fit_all = [float(row["imgs_per_s"]) for row in result.history]
    fit_med, bare_med = benchlib.median(fit_all[1:]), benchlib.median(bare_all[1:])
    ratio = fit_med / bare_med
    intervals = math.ceil(n_micro / 50)  # GradientAccumulator.run_epoch's default logging interval
    ours = sum(counts["ours"].values())
    sites = ", ".join(f"{k} x{v}" for k, v in counts["ours"].most_common()) or "none"
    tag = f"{backbone} {size}px b{batch} {device}, {data.n_train} images/epoch"
    paired = benchlib.median([f / b for f, b in zip(fit_all[1:], bare_all[1:], strict=True)])
    fmt = lambda rs: ", ".join(f"{v:.1f}" for v in rs)  # noqa: E731
    return [
        benchlib.ratio_row(
            "fit_over_bare", f"fit / bare loop imgs_per_s ({tag}; medians of epochs 2-{epochs}, "
            f"median of per-epoch ratios {paired:.3f})", ratio, ">= 0.97", benchlib.at_least(ratio, 0.97),
            command),
        benchlib.ratio_row(
            "fit_host_reads", f"fit host reads per epoch from camotune code ({n_micro} "
            f"micro-batches, {intervals} logging interval(s)); sites: {sites}", float(ours),
            f"<= {intervals} (one per logging interval)", ours <= intervals, command,
            unit="reads", torch_internal=dict(counts["torch"])),
        benchlib.figure_row(f"fit imgs_per_s per epoch [{fmt(fit_all)}]", fit_med,
                            "images/s", command, "median of epochs 2+"),
        benchlib.figure_row(f"bare loop imgs_per_s per epoch [{fmt(bare_all)}]",
                            bare_med, "images/s", command, "median of epochs 2+"),
        benchlib.figure_row(
            "torch-internal host reads in one fit epoch (CPU AdamW step counter etc.): "
            + (", ".join(f"{k} x{v}" for k, v in counts["torch"].most_common()) or "none"),
            float(sum(counts["torch"].values())), "reads", command, "informational"),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--backbone", default="edgenext_xx_small")
    p.add_argument("--size", type=int, default=64, help="image side (a multiple of 32)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for both loops")
    p.add_argument("--quick", action="store_true", help="72 images, 9 epochs (default 144, 12)")
    a = p.parse_args(argv)
    rows = run(a.quick, a.device, backbone=a.backbone, size=a.size, batch=a.batch,
               threads=a.threads)
    benchlib.print_rows(rows)
    print(f"command: {rows[0]['command']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
