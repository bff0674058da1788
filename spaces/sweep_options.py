"""The options of a sweep (scheduler, searcher, resources, stopper, tracking), each declared
once: its default, its help, its rule and the ``camotune sweep`` flag it is set with live in
the field's ``metadata``. `camotune.search.SweepSettings` extends `SweepOptions`; the flags of
``camotune sweep``/``resume``, the ``sweep:`` section of space files and every check of an
option's value are generated from these fields.

A space's ``sweep:`` section sets the options marked ``space`` (keyed by the flag's name with
``_`` for ``-``: ``trial_scheduler`` for ``--trial-scheduler``); flags given on the command
line win. ``scheduler``, the old name of ``trial_scheduler``, is still read with a
deprecation warning.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from camotune.errors import BadInput

from .dist import is_number

log = logging.getLogger(__name__)

RENAMED = {"scheduler": "trial_scheduler"}  # old space-file key -> new


def duration(text: str) -> float:
    """Seconds from ``3600``, ``90m`` or ``2h`` (``--time-budget``)."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}") from None


def int_list(text: str) -> list[int]:
    """Integers from ``4,12,36`` (``--rungs``)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None


def option(default: Any, help: str, *, flag: str | None = None, choices: tuple[str, ...] = (),
           flag_choices: tuple[str, ...] | None = None, low: float | None = None,
           strict: bool = False, space: bool = False, parse: Callable[[str], Any] | None = None,
           resume_help: str | None = None) -> Any:
    """A sweep option: ``flag`` (without ``--``; None for no flag), ``choices`` or a lower
    bound ``low`` (``strict``: the value must exceed it), ``space`` (settable in a space's
    ``sweep:`` section), ``parse`` (the flag's argparse type), ``resume_help`` (also a
    ``camotune resume`` flag, with this help)."""
    return field(default=default, metadata={
        "help": help, "flag": flag, "choices": choices, "flag_choices": flag_choices,
        "low": low, "strict": strict, "space": space, "parse": parse,
        "resume_help": resume_help})


@dataclass(frozen=True)
class CollapseSettings:
    """The collapse stopper's thresholds (see `camotune.search.collapse_stopper`)."""

    enabled: bool = option(True, "stop trials whose predictions collapse (default on)",
                           flag="collapse-stopper", space=True)
    fg_ratio: float = option(0.002, "predicted foreground share (raw weights) below which a "
                             "prediction counts as empty", flag="collapse-fg-ratio", low=0.0)
    min_steps: int = option(1000, "optimizer steps before which empty predictions do not "
                            "count (a fresh decoder often predicts nothing)",
                            flag="collapse-min-steps", low=0, space=True)
    patience_steps: int = option(400, "optimizer steps of empty predictions (from the first "
                                 "empty evaluation) that mean collapse",
                                 flag="collapse-patience-steps", low=0, space=True)
    min_best: float = option(0.2, "best raw val_iou from which a fall counts as a collapse",
                             flag="collapse-min-best", low=0.0)
    drop: float = option(0.25, "collapse when the raw val_iou falls below this share of the "
                         "trial's best", flag="collapse-drop", low=0.0)
    drop_evals: int = option(2, "evaluations in a row the IoU fall must last",
                             flag="collapse-drop-evals", low=1, space=True)
    patience: int | None = option(None, "deprecated: empty-prediction epochs in a row (counts "
                                  "epochs instead of --collapse-patience-steps)",
                                  flag="collapse-patience", low=1)
    min_epoch: int | None = option(None, "deprecated: first epoch counted in an "
                                   "all-background streak (instead of --collapse-min-steps)",
                                   flag="collapse-min-epoch", low=0)

    def __post_init__(self) -> None:
        check_options(self)
        for old, new in (("patience", "patience-steps"), ("min_epoch", "min-steps")):
            if getattr(self, old) is not None:
                log.warning("--collapse-%s is deprecated (it counts epochs, which mean few "
                            "optimizer steps at a large batch): use --collapse-%s",
                            old.replace("_", "-"), new)


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """Every option of a sweep that has a default (see the module docstring)."""

    scheduler: str = option(
        "asha", "asha stops weak trials early; fifo runs every trial to the end "
        "(--scheduler is the training LR schedule)", flag="trial-scheduler",
        choices=("asha", "fifo"), space=True)
    grace_period: int = option(2, "first ASHA rung, in epochs (rungs at grace x "
                               "reduction-factor^k unless --rungs)", flag="grace-period", low=1,
                               space=True)
    reduction_factor: int = option(3, "ASHA reduction factor: a trial continues at a rung if "
                                   "its value is in the top 1/rf of those recorded there",
                                   flag="reduction-factor", low=2, space=True)
    rungs: list[int] | None = option(  # noqa: RUF009 (the default is None)
        None, "ASHA rung epochs, e.g. 4,12,36 (increasing; overrides --grace-period)",
        flag="rungs", low=1, space=True, parse=int_list)
    rung_metric: str = option(
        "best", "value ASHA compares at a rung: best (the trial's best val_iou so far: one dip "
        "does not stop it) or last (that epoch's val_iou)", flag="rung-metric",
        choices=("best", "last"), space=True)
    brackets: int = option(1, "Hyperband brackets: bracket s starts at the rung s (for a "
                           "grace period you are unsure of)", flag="brackets", low=1,
                           space=True)
    searcher: str = option("tpe", "Optuna sampler, seeded by --seed", flag="searcher",
                           choices=("tpe", "qmc", "random", "design"),
                           flag_choices=("tpe", "qmc", "random"))
    num_samples: int = option(10, "trials to run (sampled spaces)", flag="num-samples", low=1,
                              space=True)
    time_budget_s: float | None = option(
        None, "stop starting and running trials after this long (e.g. 3600, 90m, 2h); "
        "unfinished trials continue on resume", flag="time-budget", low=0.0, strict=True,
        parse=duration)
    max_concurrent: int | None = option(None, "trials at once (default: what fits)",
                                        flag="max-concurrent", low=1, space=True)
    cpus_per_trial: float = option(1.0, "CPUs per trial (per worker); also the trial's "
                                   "--threads", flag="cpus-per-trial", low=0.0, strict=True)
    gpus_per_trial: float = option(0.0, "GPUs per trial (per worker); fractions pack small "
                                   "trials on one GPU", flag="gpus-per-trial", low=0.0)
    wait_for_resources: bool = option(
        False, "let trials wait for GPUs or CPUs that the local machine lacks (default: a "
        "local sweep whose trial does not fit exits 2 at once; a cluster joined with "
        "--address always waits for nodes)", flag="wait-for-resources",
        resume_help="let trials wait for resources the local machine lacks")
    collapse: CollapseSettings = field(default_factory=CollapseSettings)
    keep_checkpoints: str = option("best", "best: best.pt of the top 3 trials; none; all",
                                   flag="keep-checkpoints", choices=("best", "all", "none"))
    tracking_uri: str = option("", "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                               "else sqlite <storage-path>/mlflow.db; none: no MLflow)", flag="tracking-uri")
    experiment: str = option("camotune", "MLflow experiment", flag="experiment")
    log_checkpoints: bool = option(False, "upload each trial's best.pt to MLflow",
                                   flag="log-checkpoints")
    address: str | None = option(
        None, "join an existing Ray cluster (auto, host:port, ray://host:10001); with "
        "--submit, its job API (http://HEAD:8265); default: $RAY_ADDRESS, else a local Ray. "
        "A token-authenticated cluster needs its token in $RAY_AUTH_TOKEN, "
        "$RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token", flag="address",
        resume_help="join this Ray cluster instead of the one in sweep.yaml (auto, "
        "host:port, ray://host:10001); with --submit, its job API (http://HEAD:8265)")

    def __post_init__(self) -> None:
        check_options(self)


def option_fields(cls: type = SweepOptions) -> list[tuple[type, dataclasses.Field]]:
    """(owner class, field) of every option with a flag, the collapse thresholds included."""
    out = []
    for f in dataclasses.fields(cls):
        if f.name == "collapse":
            out += [(CollapseSettings, c) for c in dataclasses.fields(CollapseSettings)]
        elif f.metadata.get("flag"):
            out.append((cls, f))
    return out


def dest(f: dataclasses.Field) -> str:
    """The argparse attribute of a field's flag."""
    return f.metadata["flag"].replace("-", "_")


def _kind(f: dataclasses.Field) -> str:
    return str(f.type).split(" |")[0]


def requirement(f: dataclasses.Field) -> str:
    """What a valid value of ``f`` is, in words (``an integer >= 2``, ``asha or fifo``)."""
    meta = f.metadata
    if meta["choices"]:
        return " or ".join(meta["choices"]) if len(meta["choices"]) == 2 else \
            "one of " + ", ".join(meta["choices"])
    kind = _kind(f)
    if kind == "bool":
        return "true or false"
    if kind.startswith("list"):
        return f"a list of increasing integers >= {int(meta['low'] or 0)}"
    noun = "an integer" if kind == "int" else "a number" if kind == "float" else "a string"
    if meta["low"] is None:
        return noun
    low = meta["low"] if kind != "int" else int(meta["low"])
    return f"{noun} {'>' if meta['strict'] else '>='} {low}"


def invalid(f: dataclasses.Field, value: Any) -> bool:
    """Whether ``value`` breaks ``f``'s rule (None is valid where the default is None)."""
    if value is None:
        return f.default is not None
    meta, kind = f.metadata, _kind(f)
    if meta["choices"]:
        return value not in meta["choices"]
    if kind == "bool":
        return not isinstance(value, bool)
    if kind == "str":
        return not isinstance(value, str)
    if kind.startswith("list"):
        return not _increasing_ints(value, meta["low"])
    if isinstance(value, bool) or not is_number(value) \
            or (kind == "int" and not isinstance(value, int)) or not math.isfinite(float(value)):
        return True
    low = meta["low"]
    return low is not None and (value <= low if meta["strict"] else value < low)


def _increasing_ints(value: Any, low: float | None) -> bool:
    if not isinstance(value, (list, tuple)) or not value:
        return False
    if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        return False
    return (low is None or value[0] >= low) and all(a < b for a, b in itertools.pairwise(value))


def check_options(options: Any) -> None:
    """BadInput ``--flag: must be ... (got ...)`` for the first option breaking its rule."""
    for f in dataclasses.fields(options):
        if f.metadata.get("flag") and invalid(f, getattr(options, f.name)):
            raise BadInput(f"--{f.metadata['flag']}: must be {requirement(f)} "
                           f"(got {getattr(options, f.name)!r})")


def space_keys() -> dict[str, tuple[type, dataclasses.Field]]:
    """``sweep:`` key -> (owner class, field) of the options a space file may set."""
    return {dest(f): (owner, f) for owner, f in option_fields() if f.metadata["space"]}


def check_grace(grace_period: int, epochs: int, key: str, limit: str) -> None:
    """The first ASHA rung must come before the trials end: BadInput ``<key> <grace_period>
    exceeds <limit>`` otherwise."""
    if grace_period > epochs:
        raise BadInput(f"{key} {grace_period} exceeds {limit}")


def check_sweep(sweep: Any, design: Any, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Check a space's ``sweep:`` mapping; return it with old keys under their new names.
    A bad key or value raises BadInput naming ``sweep.<key>``."""
    if not isinstance(sweep, Mapping):
        raise BadInput(f"sweep: expected a mapping of sweep options (got {sweep!r})")
    sweep = dict(sweep)
    for old, new in RENAMED.items():
        if old in sweep:
            if new in sweep:
                raise BadInput(f"sweep.{old}: give {new} only ({old} is its old name)")
            log.warning("sweep.%s is deprecated: write sweep.%s (the --%s flag)", old, new,
                        new.replace("_", "-"))
            sweep[new] = sweep.pop(old)
    keys = space_keys()
    for name, value in sweep.items():
        if name not in keys:
            raise BadInput(f"sweep.{name}: unknown sweep option (one of {', '.join(keys)})")
        f = keys[name][1]
        if value is None or invalid(f, value):
            raise BadInput(f"sweep.{name}: must be {requirement(f)} (got {value!r})")
    if "num_samples" in sweep and design is not None:
        raise BadInput("sweep.num_samples: a design runs all its trials (runs x repeats)")
    epochs = fixed.get("epochs")
    if "grace_period" in sweep and epochs is not None:
        check_grace(sweep["grace_period"], epochs, "sweep.grace_period:",
                    f"fixed.epochs ({epochs})")
    if sweep.get("rungs") and epochs is not None:
        check_grace(sweep["rungs"][-1], epochs, "sweep.rungs: rung",
                    f"fixed.epochs ({epochs})")
    return sweep


DESIGN_NEEDS = ("a design needs every trial trained to the same epoch: use --trial-scheduler "
                "fifo --no-collapse-stopper (or sweep: {trial_scheduler: fifo, "
                "collapse_stopper: false} in the space file)")


def check_design_options(options: Mapping[str, Any]) -> None:
    """A design sweep must run FIFO without the collapse stopper: an early stop would become
    that trial's final response and a design point would go missing. ``options`` are
    `resolve`'s output; BadInput naming what is on otherwise."""
    on = []
    if options.get("scheduler", SweepOptions.__dataclass_fields__["scheduler"].default) != "fifo":
        on.append("the ASHA trial scheduler")
    collapse = options.get("collapse")
    if collapse is None or collapse.enabled:
        on.append("the collapse stopper")
    if on:
        raise BadInput(f"{' and '.join(on)} would stop trials early; {DESIGN_NEEDS}")


def add_option_arguments(parser: argparse.ArgumentParser, *, resume: bool = False) -> None:
    """The flags of every option (``camotune sweep``), or those marked ``resume_help``
    (``camotune resume``). Options a space may set default to None (unset: the space's value,
    else the option's default, applies); the help shows the default."""
    for _, f in option_fields():
        meta = f.metadata
        if resume and not meta["resume_help"]:
            continue
        text = meta["resume_help"] if resume else meta["help"]
        kwargs: dict[str, Any] = {"dest": dest(f)}
        default = None if meta["space"] or resume else f.default
        if _kind(f) == "bool":
            if meta["space"]:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["action"] = "store_true"
        else:
            kwargs["type"] = meta["parse"] or {"int": int, "float": float}.get(_kind(f), str)
            if meta["choices"]:
                kwargs["choices"] = meta["flag_choices"] or meta["choices"]
        if not resume and f.default is not None and f.default != "" and "default" not in text:
            text += f" (default {_shown(f.default)})"
        parser.add_argument(f"--{meta['flag']}", default=default, help=text, **kwargs)


def _shown(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def resolve(given: Mapping[str, Any], sweep: Mapping[str, Any]) -> dict[str, Any]:
    """``SweepOptions`` keyword arguments from flags (``given``: argparse dest -> value, None
    when not given) over a space's ``sweep:`` section over the defaults."""
    out: dict[str, Any] = {}
    collapse: dict[str, Any] = {}
    for owner, f in option_fields():
        value = given.get(dest(f))
        if value is None and f.metadata["space"]:
            value = sweep.get(dest(f))
        if value is None:
            continue
        (collapse if owner is CollapseSettings else out)[f.name] = value
    out["collapse"] = CollapseSettings(**collapse)
    return out
