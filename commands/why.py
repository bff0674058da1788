"""``camotune why``: from a good and a bad training command to which of their differences
made the bad one fail (the design: `camotune.spaces.pair_design`; the analysis:
`camotune.results.why`; see docs/why.md).

The design runs as an ordinary sweep (FIFO, no collapse stopper, every trial to the same
epoch) in ``<storage-path>/<name>/``; ``camotune resume`` continues it. ``why.yaml`` in the
folder records what the design was built from; ``why.json`` and ``why.txt`` hold the report.
The report goes to stdout (``--json``: the JSON only), logs and progress to stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from camotune import __version__
from camotune.cliutil import Parser, setup_logging
from camotune.commands.why_inputs import read_run, with_common
from camotune.errors import BadInput
from camotune.spaces.pair_design import DEFAULT_MAX_RUNS, PairDesign, design_pair

log = logging.getLogger(__name__)

__all__ = ["why_main", "why_parser"]


def why_parser() -> Parser:
    p = Parser(prog="camotune why", allow_abbrev=False,
               description="Which of the changes between a good and a bad training run made "
                           "the bad one fail: a two-level design over the settings that "
                           "differ, run as a FIFO sweep, read with OLS (Holm-adjusted), "
                           "undo/apply effects, a Shapley split of the gap and a verdict. "
                           "The report goes to stdout, logs to stderr.")
    p.add_argument("--good", help="the run that worked: a quoted 'camotune train ...' line "
                   "(with or without 'camotune train'), a run's command.txt or config.yaml")
    p.add_argument("--bad", help="the run that failed (same forms as --good)")
    p.add_argument("--fold-over", metavar="SWEEP_DIR",
                   help="run the complementary fraction of an earlier why sweep into its "
                        "foldover/ subfolder and report on the combined design (instead of "
                        "--good/--bad)")
    p.add_argument("--dataset-path", help="the dataset every trial trains on (required with "
                   "--good/--bad)")
    p.add_argument("--common", metavar="'TRAINING FLAGS'",
                   help="training flags laid over both runs after they are read, e.g. "
                        "'--backbone edgenext_xx_small --no-pretrained --num-workers 0' to "
                        "scale both to a CPU; a setting given here is equal in both runs and "
                        "so never a factor")
    p.add_argument("--seeds", type=int, default=2, metavar="N",
                   help="train every design run with seeds 0..N-1 (the blocks; default 2)")
    p.add_argument("--epochs", type=int, metavar="E",
                   help="shorten both runs to E epochs, the stage split scaled (default: "
                        "the runs' own epochs, which must then be equal or a factor)")
    p.add_argument("--at-epoch", type=int, metavar="K",
                   help="also analyse val_iou at epoch K (an early response)")
    p.add_argument("--group", action="append", default=[], metavar="a,b",
                   help="move these TrainConfig fields together as one factor (repeatable)")
    p.add_argument("--max-runs", type=int, default=DEFAULT_MAX_RUNS, metavar="M",
                   help="most distinct runs per seed: the full factorial if it fits, else "
                        f"the smallest resolution-V fraction (default {DEFAULT_MAX_RUNS})")
    p.add_argument("--name", help="sweep name (default why-<date>-<time>)")
    p.add_argument("--storage-path", default="runs", help="folder holding sweeps (default ./runs)")
    p.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default: "
                   "$MLFLOW_TRACKING_URI, else sqlite <storage-path>/mlflow.db)")
    p.add_argument("--experiment", default="camotune", help="MLflow experiment")
    p.add_argument("--cpus-per-trial", type=float, default=1.0,
                   help="CPUs per trial, also its --threads (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: what fits)")
    p.add_argument("--address", help="join an existing Ray cluster")
    p.add_argument("--dry-run", action="store_true",
                   help="print the design, the trial count and a time estimate from a "
                        "one-batch probe; run and write nothing")
    p.add_argument("--json", action="store_true", help="print the report as JSON only")
    return p


def _groups(values: Sequence[str]) -> list[tuple[str, ...]]:
    return [tuple(v.strip() for v in g.split(",") if v.strip()) for g in values]


def _pair(args) -> PairDesign:
    if not args.good or not args.bad:
        raise BadInput("--good and --bad are both required (or --fold-over SWEEP_DIR)")
    if not args.dataset_path:
        raise BadInput("--dataset-path is required")
    dataset = Path(args.dataset_path).expanduser().resolve()
    if not dataset.is_dir():
        raise BadInput(f"--dataset-path: folder not found: {args.dataset_path}")
    if args.seeds < 1:
        raise BadInput(f"--seeds must be >= 1 (got {args.seeds})")
    good = with_common(read_run(args.good, "good"), args.common, str(dataset))
    bad = with_common(read_run(args.bad, "bad"), args.common, str(dataset))
    pair = design_pair(good, bad, seeds=range(args.seeds), max_runs=args.max_runs,
                       epochs=args.epochs, group=_groups(args.group))
    from camotune.trainer.data import find_train

    find_train(dataset)  # the layout is checked now, not in every trial
    if args.at_epoch is not None and not 1 <= args.at_epoch <= pair.good.epochs:
        raise BadInput(f"--at-epoch {args.at_epoch}: must lie in 1..{pair.good.epochs}")
    return pair


def design_text(pair: PairDesign) -> str:
    """The design in words: factors with their levels, runs, seeds, resolution, aliases."""
    s = pair.summary()
    d = s["design"]
    lines = [f"{len(pair.factors)} factor(s) (good level -> bad level):"]
    for f in s["factors"]:
        lines.append(f"  {f['name']}: {f['good']!r} -> {f['bad']!r}")
    lines.append(f"design: {d['type']}, {d['runs']} runs"
                 + (" (the good corner added as an extra run)" if d["extra_good_corner"] else "")
                 + f" x {len(d['seeds'])} seed(s) {d['seeds']} = {d['trials']} trials, "
                 f"{d['epochs']} epochs each")
    lines.append(f"resolution: {d['resolution'] or 'full (nothing aliased)'}"
                 + (f"; generators {', '.join(d['generators'])}" if d["generators"] else ""))
    for effect, others in d["aliases"].items():
        lines.append(f"  {effect} = {' = '.join(others)}")
    return "\n".join(lines)


def _probe_estimate(pair: PairDesign, args) -> str:
    from camotune.commands.why_estimate import (
        batch_seconds,
        default_concurrency,
        estimate_seconds,
    )
    from camotune.trainer.data import find_train
    from camotune.trainer.loaders import split_train_val

    train, val = split_train_val(find_train(pair.good.dataset_path), pair.good.val_fraction)
    threads = max(1, int(args.cpus_per_trial))
    probes = {}
    for cfg in (pair.good, pair.bad):
        key = (cfg.batch_size, cfg.img_size)
        if key not in probes:
            log.info("probe: one batch of %d x %d px (%s) forward + backward", *key,
                     cfg.backbone)
            probes[key] = batch_seconds(cfg, threads)
    concurrency = default_concurrency(args.cpus_per_trial, args.max_concurrent)
    configs = [cfg for _, _, cfg in pair.trials()]
    seconds = estimate_seconds(configs, probes, len(train), len(val), concurrency)
    probe_text = ", ".join(f"batch {b} x {s} px: {t:.2f} s" for (b, s), t in probes.items())
    return (f"estimate: about {seconds / 60:.1f} min ({len(configs)} trials, {concurrency} at "
            f"once, {len(train)} train / {len(val)} val images; one-batch probe {probe_text}; "
            "training and validation steps only, a busy machine is slower)")


def _space(pair: PairDesign, name: str):
    from camotune.spaces import Space
    from camotune.spaces.design import Design

    levels = {}
    for f in pair.factors:
        for field, good, bad in zip(f.fields, f.good, f.bad, strict=True):
            levels[field] = (good, bad)
    return Space(name=name, description="generated by camotune why: the design between a good "
                 "and a bad run (the trials are listed in sweep.yaml's trials)",
                 design=Design(levels, 1, len(pair.seeds)),
                 sweep={"trial_scheduler": "fifo", "collapse_stopper": False})


def _trials(pair: PairDesign, runs: Sequence[int] | None = None) -> list[dict[str, Any]]:
    out = []
    for i, seed, cfg in pair.trials():
        if runs is not None and i not in runs:
            continue
        params = {field: getattr(cfg, field) for f in pair.factors for field in f.fields}
        out.append({**params, "seed": seed})
    return out


def _settings(pair: PairDesign, args, name: str, storage: Path, trials: list[dict[str, Any]]):
    from camotune.search.settings import SweepSettings
    from camotune.spaces.sweep_options import CollapseSettings

    return SweepSettings(
        name=name, storage_path=str(storage), space=_space(pair, name), space_source="why",
        base=dataclasses.replace(pair.good, seed=pair.seeds[0]), seed=pair.seeds[0],
        trials=trials, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        version=__version__, scheduler="fifo", searcher="design",
        collapse=CollapseSettings(enabled=False), cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
        tracking_uri=args.tracking_uri, experiment=args.experiment, address=args.address)


def _run_and_report(settings, args, report_dir: Path, on_prepare) -> int:
    from camotune.commands.sweep import execute
    from camotune.results.why.report import render_text
    from camotune.results.why.sweep_data import why_sweep_report

    with _stdout_to_stderr():  # the report owns stdout; Ray's banners and tables do not
        code = execute(settings, resume=False, after_prepare=on_prepare)
    report = why_sweep_report(report_dir, at_epoch=args.at_epoch)
    text = render_text(report)
    expected = settings.trial_params()
    done = report["responses"].get("final_iou", {}).get("n_trials", 0)  # trials with a value
    if done < len(expected):
        note = (f"PARTIAL: {done} of {len(expected)} trials of this sweep have a final value; "
                f"finish it with `camotune resume {settings.sweep_dir}`, then read "
                f"`camotune results {report_dir} --why`")
        log.warning("%s", note)
        text = note + "\n\n" + text
    (report_dir / "why.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (report_dir / "why.txt").write_text(text + "\n")
    _track(report, text, report_dir, args)
    print(json.dumps(report, indent=2, allow_nan=False) if args.json else text)
    return code


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 (and ``sys.stdout``) pointed at stderr for the duration."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _track(report: dict[str, Any], text: str, sweep_dir: Path, args) -> None:
    try:
        from camotune.tracking.why_run import log_why
    except ImportError:
        return
    log_why(report, text, sweep_dir, tracking_uri=args.tracking_uri,
            storage_path=str(sweep_dir.parent), experiment=args.experiment)


def _fold_over(args) -> int:
    from camotune.results.why.sweep_data import FOLDOVER_DIR, read_why

    sweep_dir = Path(args.fold_over).expanduser().resolve()
    pair, data = read_why(sweep_dir)
    if (sweep_dir / FOLDOVER_DIR).exists():
        raise BadInput(f"{sweep_dir / FOLDOVER_DIR} exists already: continue it with "
                       f"`camotune resume {sweep_dir / FOLDOVER_DIR}`")
    if pair.design.fraction == 1:
        raise BadInput(f"{sweep_dir}: a full factorial has no complementary fraction")
    fold = foldover_pair(pair)
    if args.dry_run:
        print(design_text(fold))
        return 0
    print(design_text(fold), file=sys.stderr)
    settings = _settings(fold, args, FOLDOVER_DIR, sweep_dir, _trials(fold))
    args.at_epoch = args.at_epoch if args.at_epoch is not None else data.get("at_epoch")
    return _run_and_report(settings, args, sweep_dir, None)


def foldover_pair(pair: PairDesign) -> PairDesign:
    """``pair`` with the generated factors' signs flipped (every generator word negated): the
    complementary fraction, without the extra good corner (already run)."""
    from camotune.spaces.pair import BAD, GOOD, apply_levels
    from camotune.spaces.pair_design import PairRun

    k = len(pair.factors)
    generated = {pair.design.letters[g.split(" = ")[0]] for g in pair.design.generators}
    assert all(name in pair.design.factors for name in generated) and k == len(pair.design.factors)
    runs = []
    for row in pair.design.coded():
        levels = {n: (BAD if (-v if n in generated else v) > 0 else GOOD) for n, v in row.items()}
        runs.append(PairRun(levels, apply_levels(pair.good, pair.factors, levels)))
    return dataclasses.replace(pair, runs=tuple(runs), extra_good_corner=False)


def why_main(argv: Sequence[str]) -> int:
    args = why_parser().parse_args(list(argv))
    setup_logging()
    if args.fold_over:
        if args.good or args.bad:
            raise BadInput("--fold-over takes the earlier sweep's design: drop --good/--bad")
        return _fold_over(args)
    pair = _pair(args)
    if args.dry_run:
        print(design_text(pair))
        print(_probe_estimate(pair, args))
        return 0
    from camotune.results.why.sweep_data import write_why

    storage = Path(args.storage_path).expanduser().resolve()
    name = args.name or datetime.now().strftime("why-%Y%m%d-%H%M%S")
    if "/" in name or name.startswith("."):
        raise BadInput(f"--name {name!r}: a plain folder name is required")
    if (storage / name).exists():
        raise BadInput(f"sweep {storage / name} already exists: continue it with "
                       f"`camotune resume {storage / name}` or choose another --name")
    print(design_text(pair), file=sys.stderr)
    settings = _settings(pair, args, name, storage, _trials(pair))
    groups = _groups(args.group)

    def on_prepare(s) -> None:
        write_why(s.sweep_dir, pair, max_runs=args.max_runs, group=groups,
                  at_epoch=args.at_epoch)

    return _run_and_report(settings, args, storage / name, on_prepare)
