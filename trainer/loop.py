"""``fit(cfg, report=...)``: the one training loop of camotune.

Stage 1 (the first ``--stage1-epochs``) trains the decoder and experts with the backbone
frozen; stage 2 trains everything, the backbone at ``--backbone-lr-scale`` of the stage-2 LR,
optionally unfreezing it from the deepest stage at thirds of stage 2. The CLI and the Ray
trainable both call `fit`; Ray never appears here: the caller passes ``report``.

Every epoch: validation (both raw and EMA weights when EMA is on; ``val_iou`` is the IoU of
the weights ``--objective`` names), one row in history.csv, best.pt when ``val_iou`` improves,
last.pt at checkpoint epochs (`checkpoint_due`), then ``report(row)``. Checkpoint files are
written in a background thread (`CheckpointWriter`), joined before the next write and before
`fit` returns or raises.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import shlex
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from camotune.errors import BadInput, JobFailed
from camotune.model import UNFREEZE_LEVELS, build_model
from camotune.trainer import checkpoint as ckpt
from camotune.trainer.checkpoint_writer import CheckpointWriter
from camotune.trainer.config import TrainConfig, dump_yaml, to_argv
from camotune.trainer.history import HistoryWriter, read_history
from camotune.trainer.optim import StepSchedule, param_groups
from camotune.trainer.preview import write_preview
from camotune.trainer.step import GradientAccumulator, StepStats, resolve_amp, resolve_device
from camotune.trainer.validate import Batches, device_batches, objective_weights, validate_weights

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any]], None]


@dataclass
class FitResult:
    best_val_iou: float
    epochs_run: int
    checkpoint_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)


def unfreeze_level(cfg: TrainConfig, epoch: int) -> int:
    """Backbone level trainable in ``epoch``: 0 in stage 1; in stage 2 all of it, or with
    ``--progressive-unfreeze`` one more third of it (deepest first) at each third of stage 2."""
    if cfg.stage_of_epoch(epoch) == 1:
        return 0
    if not cfg.progressive_unfreeze:
        return UNFREEZE_LEVELS
    j = epoch - cfg.stage1_epochs - 1
    return min(UNFREEZE_LEVELS, 1 + (j * UNFREEZE_LEVELS) // cfg.stage2_epochs)


def checkpoint_due(cfg: TrainConfig, epoch: int, milestones: Collection[int] = ()) -> bool:
    """Whether ``epoch`` (1-based) writes last.pt: every ``--checkpoint-every`` epochs, at the
    last epoch of stage 1, at the last epoch, and at every epoch in ``milestones``."""
    return (epoch % cfg.checkpoint_every == 0 or epoch == cfg.stage1_epochs
            or epoch == cfg.epochs or epoch in milestones)


def train_command(cfg: TrainConfig) -> str:
    """The exact ``camotune train ...`` line that reruns ``cfg``."""
    keep = ("dataset_path", "checkpoint_dir", "epochs", "seed", "threads")
    return shlex.join(["camotune", "train", *to_argv(cfg, minimal=True, keep=keep)])


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text)


def fit(cfg: TrainConfig, *, report: Report | None = None, overwrite: bool = False,
        checkpoint_epochs: Collection[int] = frozenset()) -> FitResult:
    """Train ``cfg`` to the end (or from ``cfg.resume_from`` on). Returns the best val IoU.

    ``report`` gets each epoch's row (the `METRIC_KEYS`) after its files are queued for
    writing. ``checkpoint_epochs``: epochs that always write last.pt (e.g. a scheduler's
    rungs), besides those of `checkpoint_due`.

    Raises :class:`BadInput` for bad data or paths (before any training) and
    :class:`JobFailed` with ``reason`` ``diverged`` (non-finite loss or gradient) or ``oom``.
    A checkpoint dir that already holds a run is refused unless resuming or ``overwrite``.
    """
    if not cfg.dataset_path:
        raise BadInput("--dataset-path is required")
    if cfg.pretrained_path and not cfg.resume_from and not Path(cfg.pretrained_path).is_file():
        raise BadInput(f"--pretrained-path: file not found: {cfg.pretrained_path}")
    out_dir = Path(cfg.checkpoint_dir)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    main = rank == 0
    if main and not cfg.resume_from and not overwrite and (out_dir / "last.pt").exists():
        raise BadInput(f"--checkpoint-dir {out_dir} already holds a run: resume it with "
                       f"--resume-from {out_dir / 'last.pt'} or choose another folder")
    if main:
        ckpt.prepare_dir(out_dir)  # a file or a read-only folder fails here, before the data
    state = ckpt.load(cfg.resume_from) if cfg.resume_from else None
    torch.set_num_threads(cfg.resolved_threads)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    _seed_everything(cfg.seed)

    from camotune.trainer.loaders import DataModule  # reads the data: fails early on bad data

    data = DataModule.from_config(cfg, rank=rank, world_size=world,
                                  pin_memory=device.type == "cuda")
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(dump_yaml(cfg))
        (out_dir / "command.txt").write_text(train_command(cfg) + "\n")

    try:
        return _run(cfg, state, data, device, rank, world, out_dir, report,
                    frozenset(checkpoint_epochs))
    except JobFailed:
        raise
    except BaseException as exc:
        if not _is_oom(exc):
            raise
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise JobFailed(f"out of memory ({type(exc).__name__}): the config does not fit on "
                        f"{device.type}; lower --batch-size or --img-size", reason="oom") from None


class _Run:
    """The state of one training run: model, optimizer, schedule, EMA, step."""

    def __init__(self, cfg: TrainConfig, data, device: torch.device, world: int, *,
                 resuming: bool) -> None:
        from camotune.trainer.losses import loss_from_config

        self.cfg = cfg
        self.device = device
        self.world = world
        self.amp_dtype = resolve_amp(cfg.amp, device)
        # A resumed run's weights come from its checkpoint: no hub download, no weights file.
        arch = dataclasses.replace(cfg, pretrained=False, pretrained_path="") if resuming else cfg
        self.model = build_model(arch).to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.set_backbone_trainable(0)
        self.loss_fn = loss_from_config(cfg)
        groups = param_groups(self.model, weight_decay=cfg.weight_decay,
                              backbone_lr_scale=cfg.backbone_lr_scale)
        fused = {"fused": True} if device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(groups, lr=0.0, **fused)
        self.schedule = StepSchedule(self.optimizer, total_steps=cfg.optimizer_steps(data.n_train),
                                     warmup_steps=cfg.warmup_steps_for(data.n_train),
                                     kind=cfg.scheduler,
                                     min_lr=cfg.min_lr)
        self.ema = None
        if cfg.use_ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=cfg.ema_warmup)
        self.step_model: torch.nn.Module = self.model
        self.trainer = GradientAccumulator(self.model, self.optimizer, self.loss_fn, device=device,
                               amp_dtype=self.amp_dtype,
                               accumulation_steps=cfg.accumulation_steps,
                               grad_clip=cfg.grad_clip, on_step=self._after_step,
                               trainable_params=self._trainable)
        self._params: list[torch.nn.Parameter] = []
        self.set_level(0)

    def _trainable(self) -> list[torch.nn.Parameter]:
        return self._params

    def _after_step(self) -> None:
        self.schedule.step()
        if self.ema is not None:
            # With warmup the decay grows with the optimizer step (timm ModelEmaV3); without,
            # it is the target decay from the first update, as in the original code.
            self.ema.update(self.model, step=self.schedule.step_count if self.cfg.ema_warmup
                            else None)

    def set_level(self, level: int) -> None:
        """Make ``level`` of the backbone trainable; rebuild the DDP wrapper and the compiled
        module, which see only the parameters that required a gradient when they were built."""
        self.model.set_backbone_trainable(level)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        module: torch.nn.Module = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            module = DDP(self.model, device_ids=ids, find_unused_parameters=True)
        if self.cfg.compile:
            module = torch.compile(module)
        self.step_model = module
        self.trainer.model = module

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        if self.trainer.scaler is not None and state.get("scaler") is not None:
            self.trainer.scaler.load_state_dict(state["scaler"])


def _run(cfg: TrainConfig, state, data, device, rank: int, world: int, out_dir: Path,
         report: Report | None, milestones: frozenset[int]) -> FitResult:
    writer = CheckpointWriter()
    try:
        result = _epochs(cfg, state, data, device, rank, world, out_dir, report, milestones,
                         writer)
    except BaseException:
        writer.close(quiet=True)  # the files of finished epochs on disk; the error kept
        raise
    writer.close()
    rows = read_history(out_dir / "history.csv") if rank == 0 else []
    result.history = rows
    return result


def _epochs(cfg: TrainConfig, state, data, device, rank: int, world: int, out_dir: Path,
            report: Report | None, milestones: frozenset[int],
            writer: CheckpointWriter) -> FitResult:
    from tqdm import tqdm

    main = rank == 0
    run = _Run(cfg, data, device, world, resuming=state is not None)
    start, best, best_weights = 1, -math.inf, "raw"
    if state is not None:
        run.load(state)
        start = int(state["epoch"]) + 1
        best = float(state["best_val_iou"])
        best_weights = state["best_weights"]
        log.info("resuming from %s at epoch %d (best_val_iou=%.4f)", cfg.resume_from, start, best)
    history = HistoryWriter(out_dir / "history.csv",
                            keep_until=start - 1 if state is not None else None) if main else None
    if state is not None:
        ckpt.set_rng_state(state["rng"])  # last: everything built above consumed randomness
        if start > cfg.epochs and report is not None:
            # Already complete: give the caller the final epoch's row again (a restored Ray
            # trial that finished after the sweep's last saved state needs its last result).
            report(dict(state["metrics"]))
    channels_last = device.type == "cuda"
    epochs_run = 0
    for epoch in range(start, cfg.epochs + 1):
        t_epoch = time.perf_counter()
        stage = cfg.stage_of_epoch(epoch)
        level = unfreeze_level(cfg, epoch)
        if level != run.model.unfreeze_level:
            run.set_level(level)
        run.schedule.set_stage(cfg.resolved_lr(stage), backbone_on=level > 0)
        loader = data.train_loader(epoch, cfg.micro_batch(stage))
        n_micro = len(loader)
        run.step_model.train()
        stats = StepStats(device)
        bar = tqdm(total=n_micro, desc=f"epoch {epoch}/{cfg.epochs} (stage {stage})",
                   unit="batch", leave=False, disable=None if main else True)

        def on_interval(s: StepStats, bar=bar, epoch=epoch) -> None:
            figures = s.read()  # the one host sync per logging interval
            if figures["nonfinite"]:
                raise JobFailed(f"non-finite loss or gradient in epoch {epoch} "
                                f"(micro-batch {s.micro_batches})", reason="diverged")
            bar.update(s.micro_batches - bar.n)
            bar.set_postfix(loss=f"{figures['train_loss']:.4f}")

        t_train = time.perf_counter()
        run.trainer.run_epoch(device_batches(loader, device, channels_last), stats,
                              n_micro=n_micro, on_interval=on_interval)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - t_train
        bar.close()
        if world > 1:
            _sum_over_ranks(stats)
        train_figs = stats.read()

        full = epoch % cfg.full_metrics_every == 0 or epoch == cfg.epochs
        val_batches = Batches(data.val_eval_loader(cfg.micro_batch(stage)), device,
                              channels_last)
        raw = validate_weights(run.model, val_batches, run.loss_fn, run.amp_dtype, full=full,
                               world=world)
        ema = (validate_weights(run.ema.module, val_batches, run.loss_fn, run.amp_dtype,
                                full=full, world=world) if run.ema is not None else None)
        chosen, which = objective_weights(cfg.objective, raw, ema)
        improved = chosen["iou"] > best
        if improved:
            best, best_weights = chosen["iou"], which
        epoch_images = data.train_images_per_epoch * world
        row = {
            "epoch": epoch, "stage": stage,
            "train_loss": train_figs["train_loss"], "val_loss": chosen.get("loss"),
            "val_iou": chosen["iou"], "val_iou_raw": raw["iou"],
            "val_iou_ema": ema["iou"] if ema is not None else None,
            "val_dice": chosen["dice"], "val_mae": chosen.get("mae"),
            "val_sm": chosen.get("sm"), "val_em": chosen.get("em"), "val_wfm": chosen.get("wfm"),
            "val_fg_ratio": chosen["fg_ratio"], "gt_fg_ratio": chosen["gt_fg_ratio"],
            "lr": next(g["lr"] for g in run.optimizer.param_groups if g["part"] == "head"),
            "grad_norm": train_figs["grad_norm"], "best_val_iou": best,
            "epoch_time_s": time.perf_counter() - t_epoch,
            "imgs_per_s": epoch_images / train_seconds if train_seconds > 0 else None,
            # The collapse signal of the raw weights whatever the objective, and the run's
            # progress in optimizer steps and training images (resume-exact counts).
            "val_fg_ratio_raw": raw["fg_ratio"],
            "optimizer_steps": run.schedule.step_count,
            "images_seen": epoch * epoch_images,
        }
        if main:
            due = checkpoint_due(cfg, epoch, milestones)
            if due or improved:
                writer.submit(ckpt.make_state(
                    cfg=cfg, model=run.model, ema=run.ema, optimizer=run.optimizer,
                    schedule=run.schedule, scaler=run.trainer.scaler, epoch=epoch, stage=stage,
                    unfreeze_level=level, best_val_iou=best, best_weights=best_weights,
                    metrics=row), last=out_dir / "last.pt" if due else None,
                    best=out_dir / "best.pt" if improved else None)
            history.append(row)
            log.info(" ".join(f"{k}={_fmt(v)}" for k, v in row.items()))
            net = run.ema.module if which == "ema" else run.model  # every epoch: ~0.1 s
            write_preview(net, data, device, out_dir, epoch=epoch, iou=chosen["iou"],
                          weights=which)
        epochs_run += 1
        if report is not None:
            report(row)
    return FitResult(best_val_iou=best, epochs_run=epochs_run, checkpoint_dir=out_dir)


def _sum_over_ranks(stats: StepStats) -> None:
    """Sum the epoch's training-loss sums over the data-parallel ranks, so that ``train_loss``
    is the mean over every rank's micro-batches, as with one worker (``grad_norm`` needs
    nothing: the gradients are already all-reduced)."""
    sums = torch.stack([stats.loss_sum.float(),
                        torch.full((), float(stats.micro_batches), device=stats.loss_sum.device)])
    dist.all_reduce(sums)
    stats.loss_sum = sums[0]
    stats.micro_batches = int(sums[1].item())


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
