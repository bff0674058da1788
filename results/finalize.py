"""What a sweep writes into its folder when it ends (``camotune sweep`` calls `finalize`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from camotune.results.collapse import collapse_report
from camotune.results.export import exported_config, render
from camotune.results.leaderboard import summary, to_csv
from camotune.results.plots import write_plots
from camotune.results.read import load_sweep

log = logging.getLogger(__name__)

LEADERBOARD = "leaderboard.csv"
BEST_CONFIG = "best_config.yaml"
BEST_COMMAND = "best_command.txt"
ATTRIBUTION = "attribution.md"
PLOTS_DIR = "plots"


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text if text.endswith("\n") else text + "\n")
    os.replace(tmp, path)
    return path


def finalize(sweep_dir: str | os.PathLike) -> dict[str, Any]:
    """Write ``leaderboard.csv``, ``best_config.yaml``, ``best_command.txt``, ``plots/`` (and
    ``attribution.md`` for a factorial sweep) into the sweep folder.

    Returns the `camotune.results.leaderboard.summary` (``trials``, ``finished``: trials that
    produced a val_iou, ``best_trial_id``, ``best_val_iou``, ``counts`` per stop reason,
    ``compute``) plus ``files`` (name -> path written) and ``notes`` (plot warnings and
    skips). Without any finished trial the best files are not written. BadInput when the
    folder is not a sweep.
    """
    sweep = load_sweep(sweep_dir)
    folder = sweep.path
    out = summary(sweep)
    files: dict[str, str] = {"leaderboard": str(_write(folder / LEADERBOARD, to_csv(sweep)))}
    if out["finished"]:
        cfg, _ = exported_config(sweep, 1)
        files["best_config"] = str(_write(folder / BEST_CONFIG, render(cfg, "yaml")))
        files["best_command"] = str(_write(folder / BEST_COMMAND, render(cfg, "cli")))
    report = collapse_report(sweep)
    if report is not None:
        files["attribution"] = str(_write(folder / ATTRIBUTION, report))
    plots, notes = write_plots(sweep, folder / PLOTS_DIR)
    files.update({f"plot_{k}": str(v) for k, v in plots.items()})
    for note in notes:  # edge warnings as warnings; skipped plots and what fANOVA used as info
        log.log(logging.WARNING if note.startswith("warning") else logging.INFO, "%s", note)
    log.info("results sweep=%s trials=%d finished=%d best=%s best_val_iou=%s", sweep.name,
             out["trials"], out["finished"], out["best_trial_id"],
             "-" if out["best_val_iou"] is None else f"{float(out['best_val_iou']):.4f}")
    return {**out, "files": files, "notes": notes}
