"""Up-front warnings about ASHA rungs that judge trials too early: before their LR warmup
ends, or only in stage 1 (backbone frozen) while the space searches stage-2 settings.

`warn_schedule` is called before Ray starts; it only logs. The warmup end of each trial is
computed from the space's bounds: every combination of the low and high ends (or the values)
of the searched parameters that set the warmup or the steps per epoch, with the dataset's
training-image count.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

from camotune.errors import BadInput
from camotune.trainer.config import TrainConfig

log = logging.getLogger(__name__)

# Searched fields that change when the warmup ends, in epochs.
WARMUP_KEYS = ("batch_size", "stage2_batch_size", "accumulation_steps", "warmup_steps",
               "warmup_fraction", "workers_per_trial", "stage1_epochs")
# Searched fields whose effect starts in stage 2.
STAGE2_KEYS = ("stage2_lr", "stage2_batch_size", "backbone_lr_scale", "progressive_unfreeze",
               "stage1_epochs")


@dataclass(frozen=True)
class ScheduleFigures:
    """What the warnings say: rung epochs, the earliest and latest warmup end (epochs,
    fractional), the earliest end of stage 1, the searched stage-2 fields."""

    rungs: list[int]
    warmup_end: tuple[float, float] | None
    stage1_end: int
    stage2_searched: list[str]


def warmup_end_epoch(cfg: TrainConfig, n_train: int) -> float:
    """The epoch (fractional, 0 = none) at which ``cfg``'s LR warmup ends."""
    warmup = cfg.warmup_steps_for(n_train)
    if warmup <= 0:
        return 0.0
    s1 = cfg.optimizer_steps_per_epoch(n_train, 1)
    if warmup <= s1 * cfg.stage1_epochs or cfg.stage2_epochs == 0:
        return warmup / s1
    s2 = cfg.optimizer_steps_per_epoch(n_train, 2)
    return cfg.stage1_epochs + (warmup - s1 * cfg.stage1_epochs) / s2


def training_images(cfg: TrainConfig) -> int | None:
    """Training images after the validation hold-out (``split_train_val``'s rule), or None
    when the dataset cannot be listed here (e.g. it lives on the cluster only)."""
    from camotune.trainer.data import find_train

    try:
        n = len(find_train(cfg.dataset_path))
    except (BadInput, OSError) as exc:
        log.debug("schedule check: dataset not readable here (%s)", exc)
        return None
    if n < 2:
        return None
    return n - min(max(round(n * cfg.val_fraction), 1), n - 1)


def corner_configs(settings: Any) -> list[TrainConfig]:
    """The configs of every combination of the bounds of the searched warmup/stage fields
    (a design: every design trial)."""
    space, base = settings.space, settings.base
    if settings.is_design:
        params_list = settings.trial_params()
    else:
        options = {}
        for name, dist in space.params.items():
            if name in WARMUP_KEYS:
                options[name] = list(dist.values) if dist.type == "choice" else \
                    [dist.low, dist.high]
        params_list = [dict(zip(options, combo, strict=True))
                       for combo in itertools.product(*options.values())]
    out = []
    for params in params_list:
        try:
            out.append(space.apply(base, params))
        except BadInput:  # e.g. warmup_steps and warmup_fraction both non-zero
            continue
    return out


def schedule_figures(settings: Any, n_train: int | None) -> ScheduleFigures | None:
    """The figures of the checks, or None without ASHA."""
    rungs = settings.rung_epochs
    if not rungs:
        return None
    configs = corner_configs(settings) or [settings.space.apply(settings.base, {})]
    ends = [warmup_end_epoch(c, n_train) for c in configs] if n_train else []
    searched = [k for k in STAGE2_KEYS if k in settings.space.searched]
    return ScheduleFigures(
        rungs=rungs, warmup_end=(min(ends), max(ends)) if ends and max(ends) > 0 else None,
        stage1_end=min(c.stage1_epochs for c in configs), stage2_searched=searched)


def schedule_warnings(figures: ScheduleFigures, max_epochs: int) -> list[str]:
    """The warning lines for ``figures`` (empty when the rungs look sane)."""
    out = []
    rungs = ", ".join(map(str, figures.rungs))
    if figures.warmup_end is not None:
        lo, hi = figures.warmup_end
        if figures.rungs[-1] < lo:
            out.append(f"every ASHA rung (epochs {rungs}) falls before every trial's LR warmup "
                       f"ends (epoch {lo:.1f} to {hi:.1f} over the space): ASHA judges trials "
                       f"mid-warmup; move the rungs (--rungs) or shorten the warmup "
                       f"(--warmup-fraction)")
        elif figures.rungs[0] < hi:
            early = ", ".join(str(r) for r in figures.rungs if r < hi)
            out.append(f"ASHA rung(s) at epoch {early} fall before the LR warmup of some "
                       f"trials ends (epoch {lo:.1f} to {hi:.1f} over the space): those trials "
                       f"are judged mid-warmup; consider --rungs or --warmup-fraction")
    if figures.stage2_searched and figures.stage1_end < max_epochs \
            and figures.rungs[-1] <= figures.stage1_end:
        out.append(f"every ASHA rung (epochs {rungs}) falls in stage 1 (epochs 1-"
                   f"{figures.stage1_end}, backbone frozen) but the space searches stage-2 "
                   f"settings ({', '.join(figures.stage2_searched)}): they never inform a "
                   f"stop; add a rung after epoch {figures.stage1_end} (--rungs)")
    return out


def warn_schedule(settings: Any) -> list[str]:
    """Log (warning) and return the schedule warnings of a sweep's settings."""
    if settings.scheduler != "asha":
        return []
    base = settings.space.apply(settings.base, {})
    figures = schedule_figures(settings, training_images(base))
    lines = schedule_warnings(figures, settings.max_epochs) if figures else []
    for line in lines:
        log.warning("%s", line)
    return lines
