"""``camotune sweep``, ``camotune resume`` and ``camotune demo``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from camotune import __version__
from camotune.cliutil import Parser, setup_logging
from camotune.errors import BadInput, JobFailed
from camotune.search.settings import CollapseSettings, SweepSettings, read_settings
from camotune.trainer.config import add_config_arguments, config_from_namespace

log = logging.getLogger(__name__)

# Built-in sweep defaults; a space's `sweep:` section overrides them, flags override both.
DEFAULTS: dict[str, Any] = {"scheduler": "asha", "grace_period": 2, "reduction_factor": 3,
                            "num_samples": 10, "collapse_stopper": True, "max_concurrent": None}


def sweep_parser() -> Parser:
    # No abbreviated flags: `--submit` forwards the command line minus its own flags, exactly.
    p = Parser(prog="camotune sweep", allow_abbrev=False,
               description="Search CamoXpert hyperparameters with Ray Tune (ASHA + Optuna). "
                           "Training flags given here form the base config of every trial.")
    p.add_argument("--space", required=True, help="preset name (smoke, default, seed-collapse, "
                   "seed-collapse-small) or a space YAML file")
    p.add_argument("--name", help="sweep name (default: <space>-<date>-<time>)")
    p.add_argument("--storage-path", default="runs", help="folder holding sweeps (default ./runs; "
                   "shared storage on a multi-node cluster)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                   "else sqlite <storage-path>/mlflow.db)")
    p.add_argument("--experiment", default="camotune", help="MLflow experiment")
    p.add_argument("--num-samples", type=int, help="trials to run (sampled spaces)")
    p.add_argument("--time-budget", type=_duration, help="stop starting and running trials after "
                   "this long (e.g. 3600, 90m, 2h); unfinished trials continue on resume")
    p.add_argument("--searcher", choices=("tpe", "qmc", "random"), default="tpe",
                   help="Optuna sampler, seeded by --seed")
    p.add_argument("--trial-scheduler", dest="trial_scheduler", choices=("asha", "fifo"),
                   help="asha stops weak trials early; fifo runs every trial to the end "
                        "(--scheduler is the training LR schedule)")
    p.add_argument("--grace-period", type=int, help="first ASHA rung, in epochs (default 2)")
    p.add_argument("--reduction-factor", type=int, help="ASHA reduction factor (default 3)")
    p.add_argument("--points", help="YAML list of configs to evaluate first (e.g. a control)")
    p.add_argument("--warm-start", help="give the searcher an earlier sweep's finished trials")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: what fits)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0,
                   help="CPUs per trial (per worker); also the trial's --threads")
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="GPUs per trial (per worker); fractions pack small trials on one GPU")
    p.add_argument("--keep-checkpoints", choices=("best", "all", "none"), default="best",
                   help="best: best.pt of the top 3 trials; none; all")
    p.add_argument("--collapse-stopper", action=argparse.BooleanOptionalAction, default=None,
                   help="stop trials whose predictions collapse (default on)")
    p.add_argument("--collapse-fg-ratio", type=float, default=CollapseSettings.fg_ratio,
                   help="predicted foreground share below which a prediction counts as empty")
    p.add_argument("--collapse-patience", type=int, default=CollapseSettings.patience,
                   help="empty-prediction epochs in a row that mean collapse")
    p.add_argument("--collapse-min-best", type=float, default=CollapseSettings.min_best,
                   help="best val_iou from which a fall counts as a collapse")
    p.add_argument("--collapse-drop", type=float, default=CollapseSettings.drop,
                   help="collapse when val_iou falls below this share of the trial's best")
    p.add_argument("--collapse-min-epoch", type=int, default=CollapseSettings.min_epoch,
                   help="first epoch counted in an all-background streak (default 3)")
    p.add_argument("--log-checkpoints", action="store_true",
                   help="upload each trial's best.pt to MLflow")
    p.add_argument("--address", help="join an existing Ray cluster (auto, host:port, "
                   "ray://host:10001); with --submit, its job API (http://HEAD:8265); default: "
                   "$RAY_ADDRESS, else a local Ray. A token-authenticated cluster needs its token "
                   "in $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")
    p.add_argument("--submit", action="store_true",
                   help="run the sweep's driver as a Ray job on the cluster at --address "
                        "http://HEAD:8265: prints the job id, follows its log (Ctrl-C stops "
                        "following, not the job); every path is a path on the cluster")
    add_config_arguments(p)
    return p


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}") from None


def settings_from_args(args) -> SweepSettings:
    """Validate everything that can be checked before Ray starts; BadInput on bad input."""
    from camotune.spaces import load_points, load_space

    space = load_space(args.space)
    base = config_from_namespace(args)
    if not base.dataset_path:
        raise BadInput("--dataset-path is required")
    dataset = Path(base.dataset_path).expanduser().resolve()
    if not dataset.is_dir():
        raise BadInput(f"--dataset-path: folder not found: {base.dataset_path}")
    from camotune.trainer.data import find_train

    find_train(dataset)  # the layout is checked now, not in every trial
    base = dataclasses.replace(base, dataset_path=str(dataset))
    if base.cache_dir:
        base = dataclasses.replace(base, cache_dir=str(Path(base.cache_dir).resolve()))
    if base.pretrained_path:
        if not Path(base.pretrained_path).is_file():
            raise BadInput(f"--pretrained-path: file not found: {base.pretrained_path}")
        base = dataclasses.replace(base, pretrained_path=str(Path(base.pretrained_path).resolve()))
    space.apply(base, {})  # base + fixed must be a valid config

    opts = {**DEFAULTS, **space.sweep}
    given = {"scheduler": args.trial_scheduler, "grace_period": args.grace_period,
             "reduction_factor": args.reduction_factor, "num_samples": args.num_samples,
             "collapse_stopper": args.collapse_stopper, "max_concurrent": args.max_concurrent}
    opts.update({k: v for k, v in given.items() if v is not None})
    for key in ("num_samples", "grace_period", "reduction_factor"):
        if opts[key] < 1 or (key == "reduction_factor" and opts[key] < 2):
            raise BadInput(f"--{key.replace('_', '-')} must be >= {2 if key == 'reduction_factor' else 1}")
    if opts["max_concurrent"] is not None and opts["max_concurrent"] < 1:
        raise BadInput("--max-concurrent must be >= 1")
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        raise BadInput("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if space.design is not None and args.points:
        raise BadInput("--points: a factorial design enumerates its own trials")
    points = list(space.points) + (load_points(args.points, space) if args.points else [])
    if args.warm_start:
        read_settings(args.warm_start)
    storage = Path(args.storage_path).expanduser().resolve()
    name = args.name or _generated_name(space.name, storage)
    if "/" in name or name.startswith("."):
        raise BadInput(f"--name {name!r}: a plain folder name is required")
    if (storage / name).exists():
        raise BadInput(f"sweep {storage / name} already exists: continue it with "
                       f"`camotune resume {storage / name}` or choose another --name")
    max_epochs = space.max_epochs(base)
    if opts["scheduler"] == "asha" and opts["grace_period"] > max_epochs:
        raise BadInput(f"--grace-period {opts['grace_period']} exceeds the trials' {max_epochs} epochs")
    return SweepSettings(
        name=name, storage_path=str(storage), space=space, space_source=args.space, base=base,
        scheduler=opts["scheduler"], grace_period=int(opts["grace_period"]),
        reduction_factor=int(opts["reduction_factor"]),
        searcher="design" if space.design is not None else args.searcher, seed=base.seed,
        num_samples=int(opts["num_samples"]), time_budget_s=args.time_budget,
        max_concurrent=opts["max_concurrent"], cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, points=points,
        warm_start=str(Path(args.warm_start).resolve()) if args.warm_start else None,
        collapse=CollapseSettings(enabled=bool(opts["collapse_stopper"]),
                                  fg_ratio=args.collapse_fg_ratio,
                                  patience=args.collapse_patience,
                                  min_best=args.collapse_min_best, drop=args.collapse_drop,
                                  min_epoch=args.collapse_min_epoch),
        keep_checkpoints=args.keep_checkpoints,
        tracking_uri=args.tracking_uri or "", experiment=args.experiment,
        log_checkpoints=args.log_checkpoints, address=args.address,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), version=__version__)


def _generated_name(space: str, storage: Path) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name, n = f"{space}-{stamp}", 2
    while (storage / name).exists():
        name, n = f"{space}-{stamp}-{n}", n + 1
    return name


def sweep_main(argv: Sequence[str]) -> int:
    args = sweep_parser().parse_args(list(argv))
    setup_logging()
    if args.submit:
        return _submit_sweep(args, argv)
    settings = settings_from_args(args)
    return execute(settings, resume=False)


def _submit_sweep(args, argv: Sequence[str]) -> int:
    """The checks that need no cluster file, then the same command as a Ray job."""
    from camotune.search import submit

    address = submit.check_submit_address(args.address)
    config_from_namespace(args)  # the training flags are valid
    if args.space in _presets():
        from camotune.spaces import load_space

        load_space(args.space)
    submit.check_cluster_paths(args, argv)
    name = submit.sweep_name(args)
    if "/" in name or name.startswith("."):
        raise BadInput(f"--name {name!r}: a plain folder name is required")
    command = ["sweep", *submit.entrypoint_argv(argv)] + ([] if args.name else ["--name", name])
    folder = f"{args.storage_path.rstrip('/')}/{name}"
    return submit.submit(command, address, description=f"sweep folder on the cluster: {folder}")


def _presets() -> list[str]:
    from camotune.spaces import list_presets

    return list_presets()


def resume_parser() -> Parser:
    p = Parser(prog="camotune resume", allow_abbrev=False,
               description="Continue an interrupted sweep: finished trials are kept, unfinished "
                           "ones continue from their last checkpoint. Everything comes from "
                           "the folder's sweep.yaml.")
    p.add_argument("sweep_dir", help="the sweep folder (<storage-path>/<name>); with --submit, "
                   "its absolute path on the cluster")
    p.add_argument("--address", help="join this Ray cluster instead of the one in sweep.yaml "
                   "(auto, host:port, ray://host:10001); with --submit, its job API "
                   "(http://HEAD:8265)")
    p.add_argument("--submit", action="store_true",
                   help="resume as a Ray job on the cluster at --address (see camotune sweep)")
    return p


def resume_main(argv: Sequence[str]) -> int:
    args = resume_parser().parse_args(list(argv))
    setup_logging()
    if args.submit:
        from camotune.search import submit

        address = submit.check_submit_address(args.address)
        if not args.sweep_dir.startswith("/"):
            raise BadInput(f"{args.sweep_dir}: with --submit, give the sweep folder's absolute "
                           "path on the cluster")
        return submit.submit(["resume", args.sweep_dir], address,
                             description=f"resuming sweep folder {args.sweep_dir} on the cluster")
    settings = read_settings(args.sweep_dir)
    if args.address:
        settings = dataclasses.replace(settings, address=args.address)
    if not (settings.sweep_dir / "tuner.pkl").exists():
        raise BadInput(f"{settings.sweep_dir} has no Ray Tune state to resume (tuner.pkl)")
    return execute(settings, resume=True)


def execute(settings: SweepSettings, *, resume: bool, closing_hint: bool = True) -> int:
    """Start Ray, run or continue the sweep, write its results; the exit code."""
    from camotune.search import sweep
    from camotune.search.distributed import check_resources

    workers = sweep.workers_per_trial(settings)
    check_resources(cpus=settings.cpus_per_trial, gpus=settings.gpus_per_trial, workers=workers)
    tracker = _tracker(settings)  # checks the tracking store before Ray starts
    sweep.prepare(settings, resume=resume)
    _print_mlflow_hint(settings)
    log.info("sweep %s: space=%s searcher=%s scheduler=%s max_epochs=%d trials=%s folder=%s",
             settings.name, settings.space_source, settings.searcher, settings.scheduler,
             settings.max_epochs, len(settings.trial_params()) or settings.num_samples,
             settings.sweep_dir)
    started = time.time()
    sweep.run(settings, resume=resume, tracker=tracker)
    log.info("sweep %s finished in %.0f s", settings.name, time.time() - started)
    summary = _finish(settings, tracker)
    if closing_hint:  # the demo prints it after its own summary instead
        _print_mlflow_hint(settings)
    if summary is not None and summary.get("finished", 1) == 0:
        raise JobFailed("no trial of the sweep produced a validation IoU", reason="error")
    return 0


def _tracker(settings: SweepSettings):
    try:
        from camotune.tracking import SweepTracker
    except ImportError:
        return None
    return SweepTracker.for_settings(settings)


def _finish(settings: SweepSettings, tracker) -> dict[str, Any] | None:
    try:
        from camotune.results.finalize import finalize
    except ImportError:
        return None
    summary = finalize(settings.sweep_dir)
    if tracker is not None:
        tracker.sweep_end(settings.sweep_dir)
    return summary


def _print_mlflow_hint(settings: SweepSettings) -> None:
    try:
        from camotune.tracking import mlflow_ui_command
    except ImportError:
        return
    print(f"browse it: {mlflow_ui_command(settings)}", file=sys.stderr)


def demo_main(argv: Sequence[str]) -> int:
    from camotune.commands.demo import demo

    return demo(argv)
