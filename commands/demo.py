"""``camotune demo``: synthetic data, a small ``smoke`` sweep, its leaderboard, the best
config as a ``camotune train ...`` line, and the command to browse it in the MLflow UI.

Runs on a laptop CPU in a few minutes. Running it again starts a new sweep and reuses the data.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from camotune.cliutil import Parser, add_verbose_argument, setup_logging

log = logging.getLogger(__name__)

DATA_NAME = "synthetic-64"


def demo_parser() -> Parser:
    p = Parser(prog="camotune demo",
               description="Synthetic camouflage data, a small ASHA + Optuna sweep, its "
                           "leaderboard and the best trial as a camotune train command.")
    p.add_argument("--storage-path", default="runs", help="where sweeps go (default ./runs)")
    p.add_argument("--data", help="dataset folder (default <storage-path>/demo-data/"
                   f"{DATA_NAME}, written once)")
    p.add_argument("--num-samples", type=int, default=10, help="trials (default 10)")
    p.add_argument("--train-images", type=int, default=120, help="synthetic training scenes")
    p.add_argument("--seed", type=int, default=0, help="seeds the data and the searcher")
    add_verbose_argument(p)
    return p


def ensure_data(folder: Path, *, n_train: int, seed: int) -> Path:
    """The demo dataset: written once, reused while it is there."""
    from camotune.trainer.synth import synth

    if (folder / "Train" / "Image").is_dir() and any((folder / "Train" / "Image").iterdir()):
        log.info("demo data: reusing %s", folder)
        return folder
    log.info("demo data: writing %d synthetic scenes to %s", n_train, folder)
    return synth(folder, n_train=n_train, n_test=max(8, n_train // 6), size=64, seed=seed)


def demo(argv: Sequence[str]) -> int:
    from camotune.commands.sweep import (
        _print_mlflow_hint,
        execute,
        settings_from_args,
        sweep_parser,
    )
    from camotune.results.commands import export_main, results_main
    from camotune.search.quiet import quiet_third_party

    args = demo_parser().parse_args(list(argv))
    setup_logging(args.verbose)
    quiet_third_party(args.verbose)
    storage = Path(args.storage_path)
    data = ensure_data(Path(args.data) if args.data else storage / "demo-data" / DATA_NAME,
                       n_train=args.train_images, seed=args.seed)
    name = "demo-" + datetime.now().strftime("%Y%m%d-%H%M%S")
    sweep_args = sweep_parser().parse_args([
        "--space", "smoke", "--dataset-path", str(data), "--storage-path", str(storage),
        "--name", name, "--num-samples", str(args.num_samples), "--seed", str(args.seed)])
    settings = settings_from_args(sweep_args)
    code = execute(settings, resume=False, closing_hint=False)
    sweep_dir = str(settings.sweep_dir)
    print(f"\n== leaderboard of {sweep_dir}", file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # for people: stdout is for machine output
        results_main([sweep_dir])
        print("\n== the best trial, as a command that reproduces it:")
        export_main([sweep_dir, "--format", "cli"])
    print(f"\nplots: {sweep_dir}/plots/", file=sys.stderr)
    _print_mlflow_hint(settings)
    return code
