"""``TrainConfig``: the one typed configuration behind every training flag.

Each dataclass field is one ``--kebab-case`` flag (booleans take ``--x/--no-x``). The flags of
the original CamoXpert training script keep their names and meaning. Derived values (effective
batch, the LR each stage really uses, optimizer steps) are properties and functions of the
config; they are never written back into it. Validation happens in ``__post_init__`` and raises
:class:`camotune.errors.BadInput` with a message that names the flag, so every way of building a
config (CLI, search space, YAML) rejects the same bad values before any data is read.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from camotune.errors import BadInput, excerpt

# Settings that change how a run executes but not what it computes (up to `threads` on the
# CPU): they may differ between a checkpoint and the command that resumes it.
RUNTIME_FIELDS = frozenset(
    {"num_workers", "device", "threads", "checkpoint_dir", "resume_from", "cache_dir",
     "checkpoint_every"}
)


def _f(default: Any, help: str, *, choices: Sequence[str] | None = None) -> Any:
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainConfig:
    """One CamoXpert training run. Defaults are the original report's proven recipe."""

    # -- data and files ------------------------------------------------------------------
    dataset_path: str = _f("", "dataset root (COD10K-v3, TrainDataset/TestDataset or CAMO layout)")
    checkpoint_dir: str = _f("checkpoints", "where config.yaml, history.csv, last.pt, best.pt go")
    cache_dir: str = _f("", "decoded-image cache folder (default: $CAMOTUNE_CACHE or ~/.cache/camotune)")
    val_fraction: float = _f(0.1, "share of the training images held out for validation (seeded split)")
    num_workers: int = _f(4, "data-loader processes (0 = load in the training process)")
    aug_strength: float = _f(1.0, "augmentation strength: 0 = none, 1 = default, up to 2")
    # -- model ---------------------------------------------------------------------------
    backbone: str = _f("edgenext_base", "timm backbone name (any features_only model)")
    num_experts: int = _f(7, "experts per mixture-of-experts layer")
    top_k: int = _f(2, "experts each location is routed to")
    pretrained: bool = _f(True, "start from timm's pretrained backbone weights (hub download)")
    pretrained_path: str = _f("", "local backbone weights (.safetensors or .pth) instead of the hub")
    deep_supervision: bool = _f(False, "extra losses on decoder outputs at strides 16, 8 and 4")
    deep_supervision_weight: float = _f(0.4, "weight of the deep-supervision loss")
    # -- loss ------------------------------------------------------------------------------
    bce_weight: float = _f(2.0, "weight of the binary cross-entropy term")
    iou_weight: float = _f(1.5, "weight of the soft-IoU term")
    edge_weight: float = _f(1.0, "weight of the edge (Sobel magnitude) term")
    aux_weight: float = _f(0.1, "weight of the mixture-of-experts load-balancing loss")
    # -- schedule --------------------------------------------------------------------------
    epochs: int = _f(120, "total epochs over both stages")
    stage1_epochs: int = _f(30, "the first N epochs train with the backbone frozen (stage 1)")
    batch_size: int = _f(2, "images per micro-batch in stage 1")
    stage2_batch_size: int = _f(0, "images per micro-batch in stage 2 (0 = --batch-size)")
    accumulation_steps: int = _f(4, "micro-batches accumulated per optimizer step")
    img_size: int = _f(384, "training image side in pixels (a multiple of 32)")
    eval_size: int = _f(
        384, "validation mask side in pixels: val IoU/Dice/S/E/F/MAE and fg ratios are scored "
        "against masks at this size whatever --img-size (logits resized bilinearly to it)"
    )
    progressive_unfreeze: bool = _f(
        False, "unfreeze backbone stages from the deepest at thirds of stage 2"
    )
    # -- optimizer -----------------------------------------------------------------------
    lr: float = _f(2.5e-4, "learning rate (at --lr-reference-batch when --lr-scaling is not none)")
    stage2_lr: float = _f(0.0, "stage-2 learning rate before scaling (0 = --lr)")
    backbone_lr_scale: float = _f(0.1, "backbone LR = stage-2 LR x this factor")
    lr_scaling: str = _f(
        "none", "scale the LR to each stage's effective batch", choices=("none", "sqrt", "linear")
    )
    lr_reference_batch: int = _f(8, "effective batch at which --lr is given (with --lr-scaling)")
    weight_decay: float = _f(0.01, "AdamW weight decay")
    warmup_steps: int = _f(0, "linear LR warmup, in optimizer steps")
    warmup_fraction: float = _f(
        0.0, "linear LR warmup as a fraction (0..0.5) of the run's total optimizer steps "
        "(both stages); not together with a non-zero --warmup-steps"
    )
    scheduler: str = _f("cosine", "LR schedule after warmup", choices=("cosine", "constant"))
    min_lr: float = _f(1e-6, "final LR of the cosine schedule (scaled per param group)")
    grad_clip: float = _f(1.0, "clip the accumulated gradient's norm (0 = off)")
    # -- EMA -------------------------------------------------------------------------------
    use_ema: bool = _f(False, "keep an exponential moving average of the weights")
    ema_decay: float = _f(0.9999, "target EMA decay per optimizer step")
    ema_warmup: bool = _f(True, "grow the EMA decay towards its target (timm ModelEmaV3 style)")
    objective: str = _f(
        "raw", "which weights' IoU is val_iou (ranking, best.pt): raw, ema, or best (the higher "
        "of the two each epoch); without --use-ema, ema and best mean raw",
        choices=("raw", "ema", "best"),
    )
    # -- execution -------------------------------------------------------------------------
    amp: str = _f("auto", "mixed precision (auto: bf16 or fp16 on a GPU, off on the CPU)",
                  choices=("auto", "bf16", "fp16", "off"))
    device: str = _f("auto", "where to train", choices=("auto", "cpu", "cuda"))
    threads: int = _f(0, "torch CPU threads (0 = the cores this process may use: its CPU "
                         "affinity, capped by a cgroup CPU quota; not every core of the machine)")
    compile: bool = _f(False, "torch.compile the model (GPU; first epoch pays the compile)")
    seed: int = _f(42, "random seed (data order, augmentation, initialisation)")
    workers_per_trial: int = _f(1, "data-parallel (DDP) workers for this run")
    full_metrics_every: int = _f(5, "compute S/E/weighted-F/MAE every N epochs and at the last")
    checkpoint_every: int = _f(
        1, "write last.pt every N epochs, and always at the end of stage 1 and at the last "
        "epoch (a resume replays up to N-1 epochs)"
    )
    resume_from: str = _f("", "continue from this checkpoint (its config is used)")

    def __post_init__(self) -> None:
        _validate(self)

    # -- derived values (never stored) -----------------------------------------------------
    @property
    def stage2_epochs(self) -> int:
        return self.epochs - self.stage1_epochs

    @property
    def stage2_batch(self) -> int:
        """Stage-2 micro-batch: ``--stage2-batch-size``, or ``--batch-size`` when it is 0."""
        return self.stage2_batch_size or self.batch_size

    @property
    def resolved_threads(self) -> int:
        """torch CPU threads: ``--threads``, or the cores this process may use when it is 0."""
        from camotune.trainer.cpus import available_cpus

        return self.threads or available_cpus()

    def stage_of_epoch(self, epoch: int) -> int:
        """Stage (1 or 2) of a 1-based epoch number."""
        return 1 if epoch <= self.stage1_epochs else 2

    def micro_batch(self, stage: int) -> int:
        return self.batch_size if stage == 1 else self.stage2_batch

    def effective_batch(self, stage: int) -> int:
        """Images per optimizer step: micro-batch x accumulation x data-parallel workers."""
        return self.micro_batch(stage) * self.accumulation_steps * self.workers_per_trial

    def base_lr(self, stage: int) -> float:
        """The LR given on the command line for a stage, before batch scaling."""
        return self.lr if stage == 1 else (self.stage2_lr or self.lr)

    def resolved_lr(self, stage: int) -> float:
        """The decoder LR a stage really uses, after ``--lr-scaling``."""
        return scale_lr(
            self.base_lr(stage), self.effective_batch(stage), self.lr_reference_batch,
            self.lr_scaling,
        )

    def micro_batches_per_epoch(self, n_train: int, stage: int) -> int:
        """Micro-batches one worker runs per epoch (the last partial batch included)."""
        per_worker = math.ceil(n_train / self.workers_per_trial)
        return max(1, math.ceil(per_worker / self.micro_batch(stage)))

    def optimizer_steps_per_epoch(self, n_train: int, stage: int) -> int:
        """Optimizer steps per epoch (a last partial accumulation is a step of its own)."""
        return math.ceil(self.micro_batches_per_epoch(n_train, stage) / self.accumulation_steps)

    def optimizer_steps(self, n_train: int, stage: int | None = None) -> int:
        """Optimizer steps of one stage, or of the whole run when ``stage`` is None."""
        s1 = self.stage1_epochs * self.optimizer_steps_per_epoch(n_train, 1)
        s2 = self.stage2_epochs * self.optimizer_steps_per_epoch(n_train, 2)
        return {None: s1 + s2, 1: s1, 2: s2}[stage]

    def warmup_steps_for(self, n_train: int) -> int:
        """LR warmup in optimizer steps: ``--warmup-steps``, or ``--warmup-fraction`` of the
        whole run's optimizer steps (rounded, at least 1 when the fraction is above 0)."""
        if self.warmup_fraction <= 0:
            return self.warmup_steps
        return max(1, round(self.warmup_fraction * self.optimizer_steps(n_train)))


def scale_lr(lr: float, effective_batch: int, reference_batch: int, rule: str) -> float:
    """LR for ``effective_batch`` given ``lr`` at ``reference_batch`` under ``rule``."""
    ratio = effective_batch / reference_batch
    if rule == "sqrt":
        return lr * math.sqrt(ratio)
    if rule == "linear":
        return lr * ratio
    return lr


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}


def flag(name: str) -> str:
    """The command-line flag of a field: ``img_size`` -> ``--img-size``."""
    return "--" + name.replace("_", "-")


# Inclusive [low, high] of each numeric field, checked before anything runs: beyond the field's
# own rule (>= 0, >= 1), an upper end that no real run reaches, so NaN-free but absurd values
# (a batch of 1e12, an LR of 1e300, an image of 3,200,000 px) are refused up front. Fields with
# a rule of their own (val_fraction, ema_decay, aug_strength) are checked below.
LIMITS: dict[str, tuple[float, float]] = {
    "batch_size": (1, 4096),
    "stage2_batch_size": (0, 4096),
    "accumulation_steps": (1, 4096),
    "lr_reference_batch": (1, 1_048_576),
    "img_size": (32, 4096),
    "epochs": (1, 100_000),
    "stage1_epochs": (0, 100_000),
    "warmup_steps": (0, 100_000_000),
    "num_experts": (1, 256),
    "top_k": (1, 256),
    "num_workers": (0, 1024),
    "threads": (0, 4096),
    "seed": (0, 2**32 - 1),  # NumPy's seed range
    "workers_per_trial": (1, 4096),
    "full_metrics_every": (1, 100_000),
    "checkpoint_every": (1, 100_000),
    "eval_size": (16, 4096),
    "lr": (0, 10.0),  # and > 0, below
    "stage2_lr": (0, 10.0),
    "min_lr": (0, 10.0),
    "weight_decay": (0, 100.0),
    "backbone_lr_scale": (0, 100.0),
    "grad_clip": (0, 1e6),
    "deep_supervision_weight": (0, 1000.0),
    "bce_weight": (0, 1000.0),
    "iou_weight": (0, 1000.0),
    "edge_weight": (0, 1000.0),
    "aux_weight": (0, 1000.0),
}


def _validate(c: TrainConfig) -> None:
    def need(ok: bool, name: str, rule: str) -> None:
        if not ok:
            raise BadInput(f"{flag(name)} {rule} (got {excerpt(getattr(c, name))})")

    for name, f in FIELDS.items():
        value = getattr(c, name)
        kind = _kind(f)
        if kind is bool and not isinstance(value, bool):
            raise BadInput(f"{flag(name)} must be true or false (got {excerpt(value)})")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadInput(f"{flag(name)} must be an integer (got {excerpt(value)})")
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BadInput(f"{flag(name)} must be a number (got {excerpt(value)})")
            if not math.isfinite(value):
                raise BadInput(f"{flag(name)} must be finite (got {excerpt(value)})")
        if kind is str and not isinstance(value, str):
            raise BadInput(f"{flag(name)} must be a string (got {excerpt(value)})")
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            allowed = ", ".join(f.metadata["choices"])
            raise BadInput(f"{flag(name)} must be one of {allowed} (got {excerpt(value)})")

    need(c.lr > 0, "lr", "must be > 0")
    for name, (low, high) in LIMITS.items():
        value = getattr(c, name)
        if not low <= value <= high:
            raise BadInput(f"{flag(name)} must lie in [{_num(low)}, {_num(high)}] "
                           f"(got {excerpt(value)})")
    need(c.stage1_epochs <= c.epochs, "stage1_epochs", f"must be <= --epochs ({c.epochs})")
    need(c.top_k <= c.num_experts, "top_k", f"must be <= --num-experts ({c.num_experts})")
    need(c.img_size >= 32 and c.img_size % 32 == 0, "img_size", "must be a multiple of 32")
    need(0.0 <= c.warmup_fraction <= 0.5, "warmup_fraction", "must lie in [0, 0.5]")
    if c.warmup_fraction > 0 and c.warmup_steps > 0:
        raise BadInput(f"--warmup-fraction {c.warmup_fraction!r} and --warmup-steps "
                       f"{c.warmup_steps} both set: give one of them")
    need(0.0 < c.val_fraction < 1.0, "val_fraction", "must lie strictly between 0 and 1")
    need(0.0 <= c.ema_decay < 1.0, "ema_decay", "must lie in [0, 1)")
    need(0.0 <= c.aug_strength <= 2.0, "aug_strength", "must lie in [0, 2]")
    need(c.backbone.strip() != "", "backbone", "must name a timm model")
    if not _is_timm_model(c.backbone):
        raise BadInput(f"--backbone {excerpt(c.backbone)} is not a timm model name "
                       "(e.g. edgenext_xx_small, edgenext_base)")


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


# Seeded with the EdgeNeXt names, known without importing timm (a second or more): configs are
# built by commands that never touch a model, e.g. `results`, `export` and the sweep driver.
_TIMM_CACHE: dict[str, bool] = dict.fromkeys(
    ("edgenext_xx_small", "edgenext_x_small", "edgenext_small", "edgenext_small_rw",
     "edgenext_base"), True)


def _is_timm_model(name: str) -> bool:
    if name not in _TIMM_CACHE:
        import timm  # imported here: config users such as `results` should not pay for timm

        _TIMM_CACHE[name] = bool(timm.is_model(name))
    return _TIMM_CACHE[name]


def _kind(f: dataclasses.Field) -> type:
    return {"bool": bool, "int": int, "float": float, "str": str}[str(f.type)]


DEFAULTS = TrainConfig()


# -- command line -----------------------------------------------------------------------------

def add_config_arguments(parser: argparse.ArgumentParser, base: TrainConfig = DEFAULTS, *,
                         exclude: Collection[str] = ()) -> None:
    """Add one flag per field (but the fields named in ``exclude``). Defaults are suppressed,
    so a parsed namespace holds exactly the flags the user gave (which
    `config_from_namespace` lays over ``base``)."""
    group = parser.add_argument_group("training flags (TrainConfig)")
    for name, f in FIELDS.items():
        if name in exclude:
            continue
        kind = _kind(f)
        default = getattr(base, name)
        bounds = f"; range {_num(LIMITS[name][0])}..{_num(LIMITS[name][1])}" \
            if name in LIMITS else ""
        help_text = f"{f.metadata['help']} (default: {default!r}{bounds})"
        if kind is bool:
            group.add_argument(flag(name), dest=name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag(name), dest=name, type=kind, default=argparse.SUPPRESS,
                               choices=f.metadata.get("choices"), metavar=_metavar(kind, f),
                               help=help_text)


def _metavar(kind: type, f: dataclasses.Field) -> str:
    if "choices" in f.metadata:
        return "{" + ",".join(f.metadata["choices"]) + "}"
    return {int: "N", float: "X", str: "S"}[kind]


def given_fields(namespace: argparse.Namespace) -> dict[str, Any]:
    """The config fields present in a namespace parsed with `add_config_arguments`."""
    return {k: v for k, v in vars(namespace).items() if k in FIELDS}


def config_from_namespace(namespace: argparse.Namespace, base: TrainConfig = DEFAULTS) -> TrainConfig:
    return dataclasses.replace(base, **given_fields(namespace))


def from_argv(argv: Sequence[str], base: TrainConfig = DEFAULTS) -> TrainConfig:
    """Parse training flags (only those) into a config laid over ``base``.

    Unknown flags and bad values raise :class:`BadInput` naming the flag.
    """
    from camotune.cliutil import Parser

    parser = Parser(prog="camotune train", add_help=False)
    add_config_arguments(parser, base)
    return config_from_namespace(parser.parse_args(list(argv)), base)


def to_argv(cfg: TrainConfig, *, minimal: bool = False, keep: Iterable[str] = ()) -> list[str]:
    """Flags that rebuild ``cfg`` with `from_argv` (floats written with ``repr``; a value
    that begins with ``-`` is attached as ``--dataset-path=-data``, so argparse reads it back;
    a value of exactly ``--`` is the one that argparse drops).

    With ``minimal``, fields equal to their default are left out, except those in ``keep``.
    """
    keep = set(keep)
    argv: list[str] = []
    for name, f in FIELDS.items():
        value = getattr(cfg, name)
        if minimal and name not in keep and value == getattr(DEFAULTS, name):
            continue
        if _kind(f) is bool:
            argv.append(flag(name) if value else "--no-" + name.replace("_", "-"))
            continue
        text = repr(float(value)) if _kind(f) is float else str(value)
        # argparse takes a separate "-data" for a flag of its own: attach it with "=".
        argv += [f"{flag(name)}={text}"] if text.startswith("-") else [flag(name), text]
    return argv


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(values: Mapping[str, Any], base: TrainConfig = DEFAULTS, *,
              source: str = "config") -> TrainConfig:
    """Build a config from a mapping of field names (e.g. a YAML file); unknown keys are an
    error naming ``source``. Integers given for float fields are accepted."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise BadInput(f"{source}: unknown TrainConfig field(s): {', '.join(unknown)}")
    fixed = {}
    for k, v in values.items():
        if _kind(FIELDS[k]) is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        fixed[k] = v
    return dataclasses.replace(base, **fixed)


def load_yaml(path: str) -> TrainConfig:
    """Read a config written by `dump_yaml` (or by hand); bad files (binary, alias bombs,
    deep nesting, unknown fields, bad values) raise BadInput."""
    from camotune.yamlfile import read_yaml

    data = read_yaml(path, plain_floats=False)  # dump_yaml leaves a string "1e5" unquoted
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping of TrainConfig fields")
    return from_dict(data, source=path)


def dump_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
