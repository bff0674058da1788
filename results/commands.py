"""``camotune results SWEEP_DIR`` and ``camotune export SWEEP_DIR``.

Machine-readable output (``--format csv|json|yaml|cli``) goes to stdout alone; notes and logs
to stderr. A folder that is not a sweep exits 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from camotune.cliutil import Parser, setup_logging

log = logging.getLogger(__name__)


def results_parser() -> Parser:
    p = Parser(prog="camotune results",
               description="Leaderboard of a sweep (best first), trial statuses, compute used; "
                           "for a factorial sweep the collapse attribution. Reads trials.jsonl "
                           "and each trial's history.csv, so it works while the sweep runs.")
    p.add_argument("sweep_dir", help="the sweep folder (<storage-path>/<name>)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table for people; csv and json go to stdout alone (default: "
                        "%(default)s)")
    p.add_argument("--why", action="store_true",
                   help="a design sweep's `camotune why` report alone (text; with --format "
                        "json the report object instead of the leaderboard list)")
    p.add_argument("--at-epoch", type=int, metavar="K",
                   help="with --why or a design sweep's table: also analyse val_iou at epoch K")
    p.add_argument("--plots", metavar="DIR",
                   help="also write the PNG plots into DIR (default: none; a finished sweep "
                        "has them in <sweep_dir>/plots)")
    return p


def results_main(argv: Sequence[str]) -> int:
    args = results_parser().parse_args(list(argv))
    setup_logging()
    from camotune.results import leaderboard
    from camotune.results.read import load_sweep

    sweep = load_sweep(args.sweep_dir)
    if args.why:
        return _why(args)
    notes: list[str] = []
    if args.plots:
        from camotune.results.plots import write_plots

        written, notes = write_plots(sweep, args.plots)
        log.info("plots: %s", ", ".join(str(p) for p in written.values()) or "none")
    if args.format == "json":
        print(leaderboard.to_json(sweep))
    elif args.format == "csv":
        sys.stdout.write(leaderboard.to_csv(sweep))
    else:
        print(_table(sweep, notes, args.at_epoch))
        notes = []
    for note in notes:
        print(note, file=sys.stderr)
    return 0


def _why(args) -> int:
    import json

    from camotune.errors import BadInput
    from camotune.results.why import render_text
    from camotune.results.why.sweep_data import design_sweep_report

    report = design_sweep_report(args.sweep_dir, args.at_epoch)
    if report is None:
        raise BadInput(f"{args.sweep_dir}: --why needs a design sweep with trials (camotune why "
                       "or a space file's design:)")
    print(json.dumps(report, indent=2, allow_nan=False) if args.format == "json"
          else render_text(report))
    return 0


def _table(sweep, notes: list[str], at_epoch: int | None = None) -> str:
    from camotune.results.collapse import collapse_report, separation, separation_text
    from camotune.results.leaderboard import to_table
    from camotune.results.plots import edge_warnings
    from camotune.results.why import render_text
    from camotune.results.why.sweep_data import design_sweep_report, is_why_sweep

    parts = [to_table(sweep)]
    warnings = list(dict.fromkeys([*edge_warnings(sweep), *notes]))
    if warnings:
        parts.append("\n".join(warnings))
    if sweep.design:
        why = design_sweep_report(sweep.path, at_epoch)
        if why is not None:
            parts.append("== why: good (first level) against bad (second level) ==\n"
                         + render_text(why))
        if is_why_sweep(sweep.path):
            return "\n\n".join(parts)
    report = collapse_report(sweep)
    if report is not None:
        parts.append(report)
    else:
        sep = separation(sweep)
        if sep is not None:
            parts.append(separation_text(sep))
    return "\n\n".join(parts)


def export_parser() -> Parser:
    p = Parser(prog="camotune export",
               description="The best (or K-th best) trial's whole TrainConfig: a `camotune "
                           "train` line with a checkpoint folder of its own under the sweep "
                           "folder, or YAML/JSON that loads back into a TrainConfig.")
    p.add_argument("sweep_dir", help="the sweep folder (<storage-path>/<name>)")
    p.add_argument("--format", choices=("cli", "yaml", "json"), default="cli",
                   help="cli: one camotune train line; yaml/json: every field (default: "
                        "%(default)s)")
    p.add_argument("--rank", type=int, default=1, metavar="K",
                   help="the K-th best trial by best val_iou (default: %(default)s)")
    return p


def export_main(argv: Sequence[str]) -> int:
    args = export_parser().parse_args(list(argv))
    setup_logging()
    from camotune.results.export import exported_config, render
    from camotune.results.read import load_sweep

    sweep = load_sweep(args.sweep_dir)
    cfg, row = exported_config(sweep, args.rank)
    log.info("export rank=%d trial=%s best_val_iou=%.4f epochs_run=%d of %d stop_reason=%s",
             args.rank, row["trial_id"], row["best_val_iou"], row["epochs"], cfg.epochs,
             row["stop_reason"])
    print(render(cfg, args.format))
    return 0
