"""``camotune diagnose FLAGS``: pre-flight checks of a training config, in seconds on the CPU.

Checks (each PASS / WARN / FAIL with its figures as flat keys):

- ``model_output``: a tiny batch gives finite, non-constant logits of the right shape;
- ``loss``: the training loss and its terms are finite;
- ``gradient_flow``: every trainable parameter gets a finite gradient, in stage 1 (backbone
  frozen) and stage 2 (all trainable);
- ``lr_scaling`` (stage 1) and ``lr_scaling_stage2`` (stage 2's micro-batch and LR, when the
  run has a stage 2): the LR against a reference config's, scaled to the stage's effective
  batch by the rule that fits the optimizer (AdamW: square root; see `LR_RULES`). PASS within
  [0.5x, 2x] of that rule's recommendation, WARN beyond it but not past the other rule's
  recommendation (the linear one for AdamW), FAIL further out;
- ``ema_horizon``: the share of its starting weights the EMA still holds at the end of stage 1;
- ``optimizer_steps``: optimizer steps per epoch and in total, warmup as a share of them, and
  small stage-2 micro-batches with BatchNorm layers.

Each check is reported on stderr as it finishes; the table (or ``--json``) goes to stdout at the
end. The probe batch is 2 images at 64 px with the config's backbone, randomly initialised unless
``--pretrained-path`` is given (a hub download would not be "seconds").
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from camotune.cliutil import Parser
from camotune.errors import BadInput, JobFailed
from camotune.trainer.config import TrainConfig, add_config_arguments, config_from_namespace

# The usual COD training set (COD10K-CAM train + CAMO train) when no dataset is given.
DEFAULT_TRAIN_IMAGES = 4040
PROBE_SIZE = 64


@dataclass
class Check:
    name: str
    status: str
    message: str
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "message": self.message, **self.figures}


def worst(statuses: Sequence[str]) -> str:
    for s in ("FAIL", "WARN"):
        if s in statuses:
            return s
    return "PASS"


# -- the arithmetic checks (no model needed) ----------------------------------------------------

# The batch-size scaling rule each optimizer follows: the square root for Adam-family optimizers
# (their update size is normalised by the gradient's second moment), linear for SGD. camotune
# trains with AdamW only (trainer/optim.py).
LR_RULES = {"adamw": "sqrt", "sgd": "linear"}
OPTIMIZER = "adamw"
RULE_NAMES = {"sqrt": "square-root", "linear": "linear"}
OPTIMIZER_NAMES = {"adamw": "AdamW", "sgd": "SGD"}


def lr_scaling_check(cfg: TrainConfig, *, ref_batch: int, ref_accumulation: int,
                     ref_lr: float, stage: int = 1, optimizer: str = OPTIMIZER) -> Check:
    """The LR of ``stage`` against the reference's, scaled to the stage's effective batch.

    The range is centred on the rule of ``optimizer`` (`LR_RULES`): PASS when the LR lies
    within [0.5x, 2x] of that rule's recommendation; WARN when it lies outside that but still
    between it and the other rule's recommendation; FAIL beyond. Figures (flat):
    ``recommended_lr_linear``, ``recommended_lr_sqrt``, ``ratio_linear``, ``ratio_sqrt``
    (recommendation / LR: 40 means "40x too small"), ``rule`` (the rule chosen),
    ``recommended_lr``, ``ratio``, ``safe_low``, ``safe_high``, ``warn_low``, ``warn_high``.
    """
    eff = cfg.effective_batch(stage)
    ref_eff = ref_batch * ref_accumulation
    lr = cfg.resolved_lr(stage)
    recs = {"linear": ref_lr * eff / ref_eff, "sqrt": ref_lr * math.sqrt(eff / ref_eff)}
    rule = LR_RULES[optimizer]
    other = "linear" if rule == "sqrt" else "sqrt"
    rec, rec_other = recs[rule], recs[other]
    safe_low, safe_high = 0.5 * rec, 2.0 * rec
    warn_low, warn_high = min(safe_low, rec_other), max(safe_high, rec_other)
    if safe_low <= lr <= safe_high:
        status = "PASS"
    elif warn_low <= lr <= warn_high:
        status = "WARN"
    else:
        status = "FAIL"
    figures = {
        "stage": stage, "lr": lr, "effective_batch": eff, "reference_lr": ref_lr,
        "reference_effective_batch": ref_eff, "optimizer": optimizer, "rule": rule,
        "recommended_lr_linear": recs["linear"], "recommended_lr_sqrt": recs["sqrt"],
        "ratio_linear": recs["linear"] / lr, "ratio_sqrt": recs["sqrt"] / lr,
        "recommended_lr": rec, "ratio": rec / lr, "safe_low": safe_low, "safe_high": safe_high,
        "warn_low": warn_low, "warn_high": warn_high,
    }
    name = RULE_NAMES[rule]
    msg = (f"stage {stage}: LR {lr:.3g} at effective batch {eff} against LR {ref_lr:.3g} at "
           f"{ref_eff}: {OPTIMIZER_NAMES[optimizer]} follows the "
           f"{name} rule, which recommends {rec:.3g} ({_times(rec / lr)}); the "
           f"{RULE_NAMES[other]} rule would give {rec_other:.3g}")
    if status == "WARN":
        msg += (f"; outside [0.5x, 2x] of the {name} recommendation ({safe_low:.3g}-"
                f"{safe_high:.3g}), within reach of the {RULE_NAMES[other]} one")
    elif status == "FAIL":
        msg += f"; outside the tolerated range [{warn_low:.3g}, {warn_high:.3g}]"
    return Check("lr_scaling" if stage == 1 else "lr_scaling_stage2", status, msg, figures)


def _times(ratio: float) -> str:
    if abs(ratio - 1) < 0.05:
        return "about this LR"
    return f"{ratio:.3g}x larger" if ratio > 1 else f"{1 / ratio:.3g}x smaller"


def ema_retained(decay: float, steps: int, *, warmup: bool) -> float:
    """Share of the EMA's starting weights left after ``steps`` updates, with timm ModelEmaV3's
    schedule: with warmup the first update copies the model and the decay grows as
    1 - (1 + t)^(-2/3) towards ``decay``; without, every update uses ``decay``."""
    if not warmup:
        return decay ** steps
    log_kept = 0.0
    for t in range(1, steps):  # update t+1 uses step' = t
        d = min(decay, 1.0 - (1.0 + t) ** (-2.0 / 3.0))
        if d <= 0.0:
            return 0.0
        log_kept += math.log(d)
    return math.exp(log_kept) if steps > 0 else 1.0


def ema_horizon_check(cfg: TrainConfig, n_train: int) -> Check:
    steps = cfg.optimizer_steps(n_train, 1)
    kept = ema_retained(cfg.ema_decay, steps, warmup=cfg.ema_warmup)
    figures = {"use_ema": cfg.use_ema, "ema_decay": cfg.ema_decay, "ema_warmup": cfg.ema_warmup,
               "stage1_optimizer_steps": steps, "init_weight_retained": kept,
               "half_life_steps": (math.log(0.5) / math.log(cfg.ema_decay)
                                   if cfg.ema_decay > 0 else 0.0)}
    msg = (f"after {steps} optimizer steps of stage 1 the EMA still holds {kept:.1%} of its "
           f"starting weights (decay {cfg.ema_decay}, warmup {'on' if cfg.ema_warmup else 'off'})")
    if not cfg.use_ema:
        return Check("ema_horizon", "PASS", "EMA off; if it were on: " + msg, figures)
    if kept > 0.5:
        return Check("ema_horizon", "FAIL", msg + ": validating EMA weights would score close to "
                     "the untrained model and look like a collapse; use --ema-warmup or a "
                     "lower --ema-decay", figures)
    return Check("ema_horizon", "PASS", msg, figures)


def optimizer_steps_check(cfg: TrainConfig, n_train: int, *, has_batchnorm: bool) -> Check:
    s1, s2 = cfg.optimizer_steps_per_epoch(n_train, 1), cfg.optimizer_steps_per_epoch(n_train, 2)
    total = cfg.optimizer_steps(n_train)
    warmup = cfg.warmup_steps_for(n_train)  # --warmup-steps, or --warmup-fraction of the run
    share = warmup / total if total else 0.0
    figures = {"train_images": n_train, "steps_per_epoch_stage1": s1,
               "steps_per_epoch_stage2": s2, "stage1_steps": cfg.optimizer_steps(n_train, 1),
               "stage2_steps": cfg.optimizer_steps(n_train, 2), "total_steps": total,
               "warmup_steps": warmup, "warmup_share": share,
               "stage2_micro_batch": cfg.stage2_batch, "has_batchnorm": has_batchnorm}
    problems = []
    if share > 0.25:
        problems.append(f"warmup is {share:.0%} of all optimizer steps")
    if cfg.stage1_epochs and cfg.optimizer_steps(n_train, 1) < 100:
        problems.append(f"stage 1 makes only {cfg.optimizer_steps(n_train, 1)} optimizer steps")
    if has_batchnorm and cfg.stage2_batch <= 2 and cfg.stage2_epochs > 0:
        problems.append(f"stage-2 micro-batch {cfg.stage2_batch} with BatchNorm layers: "
                        "batch statistics of 1-2 images are noise")
    msg = (f"{s1} steps/epoch in stage 1, {s2} in stage 2, {total} in all; warmup "
           f"{warmup} steps ({share:.1%})")
    if problems:
        return Check("optimizer_steps", "WARN", msg + "; " + "; ".join(problems), figures)
    return Check("optimizer_steps", "PASS", msg, figures)


def count_train_images(cfg: TrainConfig) -> tuple[int, str]:
    """Training images after the validation split, and where the number came from."""
    if not cfg.dataset_path:
        n = DEFAULT_TRAIN_IMAGES
        return n - max(1, round(n * cfg.val_fraction)), f"assumed {n} images (no --dataset-path)"
    if not Path(cfg.dataset_path).exists():
        raise BadInput(f"--dataset-path: folder not found: {cfg.dataset_path}")
    from camotune.trainer.data import find_train
    from camotune.trainer.loaders import split_train_val

    train, _ = split_train_val(find_train(cfg.dataset_path), cfg.val_fraction)
    return len(train), f"{len(train)} training images in {cfg.dataset_path}"


def run_checks(cfg: TrainConfig, *, ref_batch: int = 2, ref_accumulation: int = 4,
               ref_lr: float = 2.5e-4,
               progress: Callable[[str], None] | None = None) -> list[Check]:
    """All checks for ``cfg`` (the model probe included). ``progress`` receives one line when
    the model probe starts and one per check as it finishes."""
    from camotune.trainer.probe import probe_model

    say = progress or (lambda line: None)
    done: list[Check] = []

    def finished(checks: Sequence[Check], took: str = "") -> None:
        for i, c in enumerate(checks):
            done.append(c)
            say(f"{c.status:<4} {c.name}" + (took if i == 0 else ""))

    n_train, source = count_train_images(cfg)
    say(f"model probe: {cfg.backbone}, 2 images at {PROBE_SIZE} px, stages 1 and 2 ...")
    t = time.perf_counter()
    model_checks, has_bn = probe_model(cfg, size=PROBE_SIZE)
    finished(model_checks, f" (probe took {time.perf_counter() - t:.1f} s)")
    for stage in (1, 2) if cfg.stage2_epochs > 0 else (1,):
        finished([lr_scaling_check(cfg, ref_batch=ref_batch, ref_accumulation=ref_accumulation,
                                   ref_lr=ref_lr, stage=stage)])
    finished([ema_horizon_check(cfg, n_train)])
    steps = optimizer_steps_check(cfg, n_train, has_batchnorm=has_bn)
    steps.message += f" ({source})"
    finished([steps])
    return done


def _progress(line: str) -> None:
    print(f"diagnose: {line}", file=sys.stderr, flush=True)


def diagnose_main(argv: Sequence[str]) -> int:
    parser = Parser(prog="camotune diagnose",
                    description="Pre-flight checks of a training config (seconds on the CPU).")
    parser.add_argument("--reference-batch-size", type=int, default=2, metavar="N",
                        help="micro-batch of the reference config whose LR is known to work "
                             "(default: %(default)s, the original training script's)")
    parser.add_argument("--reference-accumulation-steps", type=int, default=4, metavar="N",
                        help="accumulation steps of the reference config (default: "
                             "%(default)s; effective batch = batch x accumulation)")
    parser.add_argument("--reference-lr", type=float, default=2.5e-4, metavar="LR",
                        help="the reference config's LR (default: %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="machine-readable output on stdout (progress stays on stderr)")
    add_config_arguments(parser)
    args = parser.parse_args(list(argv))
    if args.reference_batch_size < 1 or args.reference_accumulation_steps < 1:
        raise BadInput("--reference-batch-size and --reference-accumulation-steps must be >= 1")
    if not args.reference_lr > 0:
        raise BadInput("--reference-lr must be > 0")
    cfg = config_from_namespace(args)
    if cfg.pretrained and not cfg.pretrained_path:
        cfg = replace(cfg, pretrained=False)
    checks = run_checks(cfg, ref_batch=args.reference_batch_size,
                        ref_accumulation=args.reference_accumulation_steps,
                        ref_lr=args.reference_lr, progress=_progress)
    status = worst([c.status for c in checks])
    if args.json:
        json.dump({"status": status, "checks": [c.as_dict() for c in checks]}, sys.stdout,
                  indent=2)
        sys.stdout.write("\n")
    else:
        for c in checks:
            print(f"{c.status:<4}  {c.name:<17} {c.message}")
        print(f"{status}")
    if status == "FAIL":
        failed = ", ".join(c.name for c in checks if c.status == "FAIL")
        raise JobFailed(f"checks failed: {failed}", reason="diagnose")
    return 0
