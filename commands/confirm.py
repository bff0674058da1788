"""``camotune confirm SWEEP_DIR``: are the leaders really the best, or were they lucky?

The top K trials' configs are rerun for the full run with N seeds each (as Ray tasks with the
sweep's per-trial resources), each rerun's ``best.pt`` is evaluated on the test split(s) with
the standard COD table, and the config with the best mean validation IoU wins. Everything goes
to ``confirm.csv`` in the sweep folder and under the sweep's MLflow parent run; the winner's
weights are registered as model ``camotune-<sweep>`` with the alias ``champion``.

The winner is chosen on validation IoU (a split of the training images); the test figures are
reported, never used to choose.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from camotune.cliutil import Parser, add_verbose_argument, setup_logging
from camotune.errors import BadInput
from camotune.trainer.config import TrainConfig, from_dict

log = logging.getLogger(__name__)

CONFIRM_FILE = "confirm.csv"
CONFIRM_DIR = "confirm"


def confirm_parser() -> Parser:
    p = Parser(prog="camotune confirm",
               description="Rerun the best K configs of a sweep with N seeds for the full run, "
                           "evaluate them on the test split(s), register the winner.")
    p.add_argument("sweep_dir")
    p.add_argument("--top-k", type=int, default=3, help="configs to rerun (default 3)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per config (default 3)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="what each rerun's best.pt is evaluated on (default test)")
    p.add_argument("--no-register", action="store_true",
                   help="do not register the winner in the MLflow Model Registry")
    p.add_argument("--format", choices=("csv", "json"),
                   help="also print the per-config summary on stdout in this format "
                        "(default: none; the summary table is always on stderr)")
    add_verbose_argument(p)
    return p


def rerun_configs(sweep_dir: Path, top_k: int, seeds: int) -> list[tuple[str, TrainConfig]]:
    """(trial_id, config) of every rerun: the top ``top_k`` trials by best val_iou, each with
    seeds ``seed, seed+1, ...``, each in ``<sweep>/confirm/<trial_id>/seed<s>/``."""
    from camotune.results.read import load_sweep

    sweep = load_sweep(sweep_dir)
    trials = sweep.trials
    ranked = trials[trials["best_val_iou"].notna()].sort_values("best_val_iou",
                                                                ascending=False)
    if ranked.empty:
        raise BadInput(f"{sweep_dir}: no trial has a validation IoU to confirm")
    out = []
    for _, row in ranked.head(top_k).iterrows():
        cfg = from_dict(row["config"], source=f"trial {row['trial_id']}")
        for k in range(seeds):
            seed = cfg.seed + k
            folder = sweep_dir / CONFIRM_DIR / str(row["trial_id"]) / f"seed{seed}"
            out.append((str(row["trial_id"]), dataclasses.replace(
                cfg, seed=seed, checkpoint_dir=str(folder), resume_from="")))
    return out


def confirm_main(argv: Sequence[str]) -> int:
    from camotune.search.quiet import quiet_third_party
    from camotune.search.settings import read_settings

    args = confirm_parser().parse_args(list(argv))
    setup_logging(args.verbose)
    quiet_third_party(args.verbose)  # before Ray starts: plain log prefixes, no tqdm bars
    if args.top_k < 1 or args.seeds < 1:
        raise BadInput("--top-k and --seeds must be >= 1")
    sweep_dir = Path(args.sweep_dir)
    settings = read_settings(sweep_dir)
    from camotune.sweepdir.lock import locked

    with locked(sweep_dir, "confirm"):
        return _confirm(args, sweep_dir, settings)


def _confirm(args, sweep_dir: Path, settings) -> int:
    from camotune.search.reruns import run_all, summarise

    jobs = rerun_configs(sweep_dir, args.top_k, args.seeds)
    log.info("confirm: %d configs x %d seeds = %d full runs of %s", args.top_k, args.seeds,
             len(jobs), sweep_dir)
    rows = run_all(jobs, settings, args.split)
    summary = summarise(rows)
    winner = summary.iloc[0]
    import pandas as pd

    table = pd.DataFrame(rows).merge(summary, on="trial_id")
    path = sweep_dir / CONFIRM_FILE
    table.to_csv(path, index=False)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"), file=sys.stderr)
    if args.format == "csv":
        print(summary.to_csv(index=False), end="")
    elif args.format == "json":
        import json

        print(json.dumps(summary.to_dict(orient="records"), indent=2, default=float))
    print(f"winner: trial {winner['trial_id']} val_iou {winner['val_iou_mean']:.4f} "
          f"+- {winner['val_iou_std']:.4f} over {int(winner['seeds'])} seeds; {path}",
          file=sys.stderr)
    from camotune.tracking.confirm_runs import log_confirm

    log_confirm(settings, rows, summary, path, register=not args.no_register)
    return 0
