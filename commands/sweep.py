"""``camotune sweep``, ``camotune resume`` and ``camotune demo``."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from camotune import __version__
from camotune.cliutil import Parser, add_verbose_argument, setup_logging, tracking_off
from camotune.errors import BadInput, JobFailed
from camotune.search.settings import SweepSettings, read_settings
from camotune.spaces.sweep_options import (
    SweepOptions,
    add_option_arguments,
    check_design_options,
    check_grace,
    resolve,
)
from camotune.trainer.config import add_config_arguments, config_from_namespace

log = logging.getLogger(__name__)

# Training flags that mean nothing for a sweep: each trial trains in its own folder
# (trials/<trial_id>/) and resumes from its own checkpoint.
PER_TRIAL_FIELDS = ("checkpoint_dir", "resume_from")
LEADERS_SHOWN = 5


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
    add_option_arguments(p)
    p.add_argument("--points", help="YAML list of configs to evaluate first (e.g. a control)")
    p.add_argument("--warm-start", help="give the searcher an earlier sweep's finished trials")
    p.add_argument("--submit", action="store_true",
                   help="run the sweep's driver as a Ray job on the cluster at --address "
                        "http://HEAD:8265: prints the job id, follows its log (Ctrl-C stops "
                        "following, not the job); every path is a path on the cluster")
    add_verbose_argument(p)
    add_config_arguments(p, exclude=PER_TRIAL_FIELDS)
    return p


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

    options = resolve(vars(args), space.sweep)
    SweepOptions(**options)  # each option checked by its own rule, before anything is written
    if space.design is not None:
        check_design_options(options)
    if space.design is not None and args.points:
        raise BadInput("--points: a factorial design enumerates its own trials")
    if space.design is not None and args.num_samples is not None:
        raise BadInput("--num-samples: a design runs all its trials (runs x repeats); "
                       "drop the flag or change the design's repeats")
    points = list(space.points) + (load_points(args.points, space) if args.points else [])
    for i, point in enumerate(points):  # each point on this base config (e.g. --num-experts)
        try:
            space.apply(base, point)
        except BadInput as exc:
            raise BadInput(f"points[{i}] with the base config: {exc}") from None
    options.update(_tracking_options(options.get("tracking_uri") or ""))
    if args.warm_start:
        read_settings(args.warm_start)
    storage = Path(args.storage_path).expanduser().resolve()
    check_storage(storage, "--storage-path")
    name = args.name or _generated_name(space.name, storage)
    if "/" in name or name.startswith("."):
        raise BadInput(f"--name {name!r}: a plain folder name is required")
    if (storage / name).exists():
        raise BadInput(f"sweep {storage / name} already exists: continue it with "
                       f"`camotune resume {storage / name}` or choose another --name")
    from camotune.commands.preflight import check_trials

    # what every trial needs (may build a model with hub weights): after the cheap checks
    check_trials(space, base, points, base.seed)
    max_epochs = space.max_epochs(base)
    settings = SweepSettings(
        name=name, storage_path=str(storage), space=space, space_source=args.space, base=base,
        seed=base.seed, points=points,
        warm_start=str(Path(args.warm_start).resolve()) if args.warm_start else None,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), version=__version__,
        **{**options, "searcher": "design" if space.design is not None else options.get(
            "searcher", "tpe")})
    if settings.scheduler == "asha":
        check_grace(settings.grace_period, max_epochs, "--grace-period",
                    f"the trials' {max_epochs} epochs")
    return settings


def _setup_output(verbose: bool) -> None:
    """Log lines on stderr; third-party console output off unless ``--verbose``."""
    from camotune.search.quiet import quiet_third_party

    setup_logging(verbose)
    quiet_third_party(verbose)


def _tracking_options(uri: str) -> dict[str, Any]:
    """The tracking URI as stored (its secret moved to MLflow's environment variables) and
    which kind of secret it had; an unknown scheme is BadInput."""
    import os

    from camotune.tracking.credentials import check_scheme, take_credentials

    if os.environ.get("MLFLOW_TRACKING_URI") and not uri:
        check_scheme(os.environ["MLFLOW_TRACKING_URI"], "$MLFLOW_TRACKING_URI")
    if not uri:
        return {}
    check_scheme(uri)
    stored, kind = take_credentials(uri)
    return {"tracking_uri": stored, "tracking_auth": kind}


def check_storage(storage: Path, flag: str) -> None:
    """BadInput unless sweep folders can be made under ``storage`` (it, or its nearest
    existing parent, is a writable folder): probed before anything is written."""
    import os

    probe = storage
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise BadInput(f"{flag} {storage}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BadInput(f"{flag} {storage}: {probe} is not writable")


def _generated_name(space: str, storage: Path) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name, n = f"{space}-{stamp}", 2
    while (storage / name).exists():
        name, n = f"{space}-{stamp}-{n}", n + 1
    return name


def sweep_main(argv: Sequence[str]) -> int:
    args = sweep_parser().parse_args(list(argv))
    _setup_output(args.verbose)
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
    add_option_arguments(p, resume=True)
    p.add_argument("--submit", action="store_true",
                   help="resume as a Ray job on the cluster at --address (see camotune sweep)")
    add_verbose_argument(p)
    return p


def resume_main(argv: Sequence[str]) -> int:
    args = resume_parser().parse_args(list(argv))
    _setup_output(args.verbose)
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
    if args.wait_for_resources:
        settings = dataclasses.replace(settings, wait_for_resources=True)
    if not (settings.sweep_dir / "tuner.pkl").exists():
        raise BadInput(f"{settings.sweep_dir} has no Ray Tune state to resume (tuner.pkl)")
    return execute(settings, resume=True)


def execute(settings: SweepSettings, *, resume: bool, closing_hint: bool = True,
            after_prepare: Callable[[SweepSettings], Any] | None = None) -> int:
    """Start Ray, run or continue the sweep, write its results; the exit code (130 after
    Ctrl-C, with how to resume). ``after_prepare`` is called once the sweep folder exists,
    before any trial runs. The sweep folder is locked meanwhile; whatever ends the command,
    the MLflow parent run is closed (FAILED on an error, KILLED on Ctrl-C)."""
    from camotune.search import interrupt, sweep
    from camotune.search.distributed import check_resources
    from camotune.sweepdir.lock import locked

    workers = sweep.workers_per_trial(settings)
    check_resources(cpus=settings.cpus_per_trial, gpus=settings.gpus_per_trial, workers=workers)
    with contextlib.ExitStack() as stack:
        if resume:
            stack.enter_context(locked(settings.sweep_dir, "resume"))
            _warn_missing_secret(settings)
        tracker = _tracker(settings)  # checks the tracking store before Ray starts
        try:
            sweep.prepare(settings, resume=resume)
            if not resume:
                stack.enter_context(locked(settings.sweep_dir, "sweep"))
            if after_prepare is not None:
                after_prepare(settings)
            _print_mlflow_hint(settings)
            log.info("sweep %s: space=%s searcher=%s scheduler=%s max_epochs=%d trials=%s "
                     "folder=%s", settings.name, settings.space_source, settings.searcher,
                     settings.scheduler, settings.max_epochs,
                     len(settings.trial_params()) or settings.num_samples, settings.sweep_dir)
            started = time.time()
            sweep.run(settings, resume=resume, tracker=tracker)
            log.info("sweep %s %s after %.0f s", settings.name,
                     "interrupted" if interrupt.received() else "finished",
                     time.time() - started)
            summary = _finish(settings, tracker)
        except KeyboardInterrupt:
            _abort(tracker, settings, "KILLED")
            return _interrupted(settings)
        except BaseException:
            _abort(tracker, settings, "FAILED")
            raise
    if interrupt.received():
        return _interrupted(settings)
    if closing_hint:  # the demo prints these after its own summary instead
        _print_leaders(settings, summary)
        _print_mlflow_hint(settings)
    if summary is not None and summary.get("finished", 1) == 0:
        raise _all_failed(settings)
    return 0


def _print_leaders(settings: SweepSettings, summary: dict[str, Any] | None) -> None:
    """The end of a sweep on stderr (stdout is for machine-readable output, which `camotune
    results --format csv|json` and `camotune export --format` give): the top trials of the
    leaderboard and the best trial as a `camotune train` command."""
    if summary is None:
        return
    from camotune.results.leaderboard import to_table
    from camotune.results.read import load_sweep

    lines = to_table(load_sweep(settings.sweep_dir)).splitlines()
    head, rows = lines[:4], lines[4:]  # counts, compute, blank line, column names
    more = len(rows) - LEADERS_SHOWN
    shown = head + rows[:LEADERS_SHOWN]
    if more > 0:
        shown.append(f"... {more} more: camotune results {settings.sweep_dir}")
    print("\n".join(["", *shown]), file=sys.stderr)
    command = summary.get("files", {}).get("best_command")
    if command:
        print(f"\nbest trial {summary['best_trial_id']} (best_val_iou "
              f"{float(summary['best_val_iou']):.4f}), as a command:\n"
              f"{Path(command).read_text().rstrip()}", file=sys.stderr)


def _all_failed(settings: SweepSettings) -> JobFailed:
    """The sweep's failure when no trial produced a validation IoU: the trials' common
    reason and the first line of its message when every trial failed the same way."""
    from camotune.sweepdir import TRIALS_FILE, read_events

    ends = [e for e in read_events(settings.sweep_dir / TRIALS_FILE) if e["event"] == "end"]
    reasons = {e["stop_reason"] for e in ends}
    if len(reasons) == 1:
        reason = reasons.pop()
        firsts = {(e.get("message") or "").strip().splitlines()[0]
                  for e in ends if (e.get("message") or "").strip()}
        message = f"every trial ({len(ends)}) ended with {reason}"
        if len(firsts) == 1:
            message += f": {firsts.pop()}"
        elif firsts:
            message += f" ({len(firsts)} different messages; see trials.jsonl)"
        return JobFailed(message, reason=reason)
    counts = ", ".join(f"{r} {sum(e['stop_reason'] == r for e in ends)}"
                       for r in sorted(reasons, key=str)) or "no trial ended"
    return JobFailed(f"no trial of the sweep produced a validation IoU ({counts}); "
                     f"see {settings.sweep_dir / TRIALS_FILE}", reason="error")


def _interrupted(settings: SweepSettings) -> int:
    print(f"sweep {settings.name} interrupted: continue it with "
          f"`camotune resume {settings.sweep_dir}`", file=sys.stderr)
    return 130


def _abort(tracker, settings: SweepSettings, status: str) -> None:
    """Close the parent run honestly when the sweep did not reach its end."""
    if tracker is None:
        return
    try:
        tracker.sweep_abort(status)
    except Exception as exc:  # the original error matters more; say why MLflow was not closed
        log.warning("mlflow: could not close the sweep's run as %s (%s)", status, exc)


def _warn_missing_secret(settings: SweepSettings) -> None:
    try:
        from camotune.tracking.credentials import warn_if_missing
    except ImportError:
        return
    warn_if_missing(settings.tracking_auth, settings.tracking_uri)


def _tracker(settings: SweepSettings):
    if tracking_off(settings.tracking_uri):
        return None
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
    if tracking_off(settings.tracking_uri):
        return
    try:
        from camotune.tracking import mlflow_ui_command
    except ImportError:
        return
    print(f"browse it: {mlflow_ui_command(settings)}", file=sys.stderr)


def demo_main(argv: Sequence[str]) -> int:
    from camotune.commands.demo import demo

    return demo(argv)
