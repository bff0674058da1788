"""PNG plots of a sweep (matplotlib, Agg backend): learning curves, each parameter against the
best val_iou, parameter importance, rung bias and compute.

`write_plots(sweep, out_dir)` writes every plot it can and returns notes: a warning when the
best trial sits at the edge of a searched range, which trials the importance compared (the
epoch and how many), and why a plot was skipped (too few comparable trials for importance, no
ASHA rungs for the rung bias).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from camotune.results.read import Sweep

log = logging.getLogger(__name__)

COLOURS = {"completed": "#1b9e77", "asha_stopped": "#7570b3", "collapsed": "#d95f02",
           "diverged": "#e7298a", "oom": "#a6761d", "error": "#666666", "running": "#1f78b4",
           "interrupted": "#b2df8a", "orphaned": "#bbbbbb"}
EDGE_SHARE = 0.1  # "at the edge": within this share of the range (log range for loguniform)


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def colour(reason: str) -> str:
    return COLOURS.get(reason, "#000000")


def save_figure(fig, path: Path, *, layout: bool = True) -> Path:
    if layout:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def _stage1_epochs(sweep: Sweep) -> int | None:
    fixed = sweep.settings["space"].get("fixed") or {}
    value = fixed.get("stage1_epochs", sweep.settings["base"].get("stage1_epochs"))
    return int(value) if value is not None else None


TOP_TRIALS = 3  # learning curves: the best trials drawn on top and named in a legend
TOP_STYLES = (("#000000", "-"), ("#a50f15", "--"), ("#b8860b", "-."))
MUTED = ("collapsed", "diverged")  # flat curves that pile up: muted, spread apart a little


def learning_curves(sweep: Sweep, path: Path) -> Path:
    """`learning_curves_figure` written to ``path``."""
    return save_figure(learning_curves_figure(sweep), path)


def learning_curves_figure(sweep: Sweep):
    """The matplotlib Figure of val_iou against epoch for every trial, coloured by stop
    reason (with counts). The ``TOP_TRIALS`` best trials are drawn on top and named with their
    best val_iou in a second legend. Collapsed and diverged trials are dashed and muted, each
    shifted by a small vertical offset so that curves lying on top of each other stay
    countable (in this plot only), and counted where they end ("4 collapsed"). ASHA rungs as
    dashed lines, the stage-2 start as a dotted line, a dot where each trial stopped."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    df = sweep.trials
    ranked = df[df["best_val_iou"].notna()].sort_values("best_val_iou", ascending=False,
                                                         kind="stable")
    top = list(ranked["trial_id"][:TOP_TRIALS])
    per_reason = df["stop_reason"].value_counts().to_dict()
    muted_rows = [i for i, r in enumerate(df["stop_reason"]) if r in MUTED]
    spread = 0.012  # in IoU units, the whole band of offsets
    offsets = {row: spread * (k / max(1, len(muted_rows) - 1) - 0.5) if len(muted_rows) > 1
               else 0.0 for k, row in enumerate(muted_rows)}
    seen: set[str] = set()
    top_handles = {}
    ends: dict[str, list[tuple[int, float]]] = {}
    for i, (_, t) in enumerate(df.iterrows()):
        ys = [math.nan if v is None else v for v in t["val_iou_history"]]
        if not ys:
            continue
        xs = [int(r["epoch"]) for r in t["history"]] or list(range(1, len(ys) + 1))
        reason = t["stop_reason"]
        label = None if reason in seen else f"{reason} ({per_reason.get(reason, 0)})"
        seen.add(reason)
        if t["trial_id"] in top:
            k = top.index(t["trial_id"])
            c, ls = TOP_STYLES[k]
            z = 5 + TOP_TRIALS - k  # the best on top
            (line,) = ax.plot(xs, ys, color=c, ls=ls, lw=2.4, zorder=z)
            ax.plot(xs[-1:], ys[-1:], "o", color=c, ms=5, zorder=z)
            top_handles[k] = (line, f"#{k + 1} {t['trial_id']}: {t['best_val_iou']:.3f}")
            if label:  # keep the stop-reason legend complete
                ax.plot([], [], color=colour(reason), lw=1.3, label=label)
            continue
        if reason in MUTED:
            ys = [y + offsets[i] for y in ys]
            ends.setdefault(reason, []).append((xs[-1], ys[-1]))
            ax.plot(xs, ys, color=colour(reason), alpha=0.55, lw=1.0, ls="--", label=label)
        else:
            ax.plot(xs, ys, color=colour(reason), alpha=0.6, lw=1.2, label=label)
        ax.plot(xs[-1:], ys[-1:], "o", color=colour(reason), ms=3.5, alpha=0.8)
    for i, rung in enumerate(sweep.rungs()):
        ax.axvline(rung, color="#444444", ls="--", lw=0.9,
                   label="ASHA rung" if i == 0 else None)
    s1 = _stage1_epochs(sweep)
    if s1 and s1 < sweep.max_epochs:
        ax.axvline(s1 + 0.5, color="#999999", ls=":", lw=1.0, label="stage 2 starts")
    for reason, points in ends.items():  # "N collapsed" next to where their curves end
        x_end = max(x for x, _ in points)
        y_mid = float(np.nanmean([y for _, y in points]))
        at_edge = x_end >= sweep.max_epochs  # no room on the right: write it above, leftwards
        ax.annotate(f"{len(points)} {reason}", (x_end, y_mid),
                    xytext=(-6, 9) if at_edge else (8, 0), textcoords="offset points",
                    ha="right" if at_edge else "left", va="center", fontsize=8,
                    color=colour(reason))
    ax.set_xlim(0.5, sweep.max_epochs + 0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation IoU")
    ax.set_title(f"{sweep.name}: learning curves of {len(df)} trials")
    ax.grid(alpha=0.3)
    if seen:
        first = ax.legend(loc="upper left", fontsize=8, title="stop reason (trials)",
                          title_fontsize=8, bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.add_artist(first)
    if top_handles:
        items = [top_handles[k] for k in sorted(top_handles)]
        ax.legend([h for h, _ in items], [text for _, text in items], loc="lower left",
                  bbox_to_anchor=(1.01, 0.0), borderaxespad=0, fontsize=8,
                  title="best trials (best IoU)", title_fontsize=8)
    return fig


def space_dists(sweep: Sweep) -> dict[str, dict[str, Any]]:
    """param -> its space entry ({type, low, high} or {type: choice, values}); design factors
    as a choice of their two levels."""
    space = sweep.settings["space"]
    if space.get("design"):
        return {f: {"type": "choice", "values": list(v)}
                for f, v in space["design"]["levels"].items()}
    return dict(space.get("params") or {})


def edge_warnings(sweep: Sweep) -> list[str]:
    """One line per searched range whose best trial lies within 10% of an end (on the log
    scale for loguniform); numeric choices of 3+ values count when the best is the first or
    last. Nothing for designs (their two levels are ends by construction)."""
    df = sweep.trials[sweep.trials["best_val_iou"].notna()]
    if df.empty or sweep.design:
        return []
    best = df.loc[df["best_val_iou"].idxmax()]
    out = []
    for name, dist in space_dists(sweep).items():
        value = best.get(name)
        if value is None or isinstance(value, (bool, str)):
            continue
        kind = dist.get("type")
        if kind in ("loguniform", "uniform", "int"):
            lo, hi, v = float(dist["low"]), float(dist["high"]), float(value)
            if kind == "loguniform":
                lo, hi, v = math.log(lo), math.log(hi), math.log(v)
            share = (v - lo) / (hi - lo)
            if share <= EDGE_SHARE or share >= 1 - EDGE_SHARE:
                end = "low" if share <= EDGE_SHARE else "high"
                out.append(f"warning: the best trial's {name}={value:.4g} sits at the {end} edge "
                           f"of its range [{dist['low']}, {dist['high']}]: widen the range")
        elif kind == "choice":
            values = [x for x in dist["values"] if not isinstance(x, (bool, str))]
            if len(values) >= 3 and len(values) == len(dist["values"]) \
                    and value in (min(values), max(values)):
                end = "smallest" if value == min(values) else "largest"
                out.append(f"warning: the best trial's {name}={value} is the {end} of its "
                           f"choices {dist['values']}: consider extending them")
    return out


def params_vs_iou(sweep: Sweep, path: Path) -> Path | None:
    """One panel per searched param: its value against the trial's best val_iou, coloured by
    stop reason (loguniform params on a log axis, choices as jittered categories; the best
    trial circled). None when no trial has a val_iou."""
    df = sweep.trials[sweep.trials["best_val_iou"].notna()]
    params = list(sweep.params)
    if df.empty or not params:
        return None
    plt = pyplot()
    dists = space_dists(sweep)
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    best_at = int(np.argmax(df["best_val_iou"].to_numpy()))
    rng = np.random.default_rng(0)
    for ax, name in zip(axes.flat, params, strict=False):
        kind = dists.get(name, {}).get("type", "choice")
        values = df[name]
        numeric = kind in ("loguniform", "uniform", "int")
        if numeric:
            xs = values.astype(float).to_numpy()
        else:
            listed = [str(v) for v in dists.get(name, {}).get("values", [])]
            seen = sorted(set(map(str, values.unique())) - set(listed), key=natural_key)
            cats = listed + seen  # every choice, even one no finished trial has yet
            pos = {c: i for i, c in enumerate(cats)}
            xs = np.array([pos[str(v)] for v in values]) + rng.uniform(-0.15, 0.15, len(values))
            ax.set_xticks(range(len(cats)), cats)
            ax.set_xlim(-0.5, len(cats) - 0.5)
        ax.scatter(xs, df["best_val_iou"], c=[colour(r) for r in df["stop_reason"]], s=22,
                   alpha=0.85, edgecolors="none")
        ax.scatter([xs[best_at]], [df["best_val_iou"].iloc[best_at]], s=110, facecolors="none", edgecolors="black",
                   lw=1.2)
        if kind == "loguniform":
            ax.set_xscale("log")
        ax.set_xlabel(name + (" (log)" if kind == "loguniform" else ""))
        ax.set_ylabel("best validation IoU")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], ls="", marker="o", color=colour(r), label=r)
               for r in sorted(df["stop_reason"].unique())]
    handles.append(plt.Line2D([], [], ls="", marker="o", mfc="none", mec="black", ms=10,
                              label="best trial"))
    fig.suptitle(f"{sweep.name}: each searched parameter against best validation IoU")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
               title="stop reason", frameon=False)
    return save_figure(fig, path, layout=False)


def natural_key(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def compute_plot(sweep: Sweep, path: Path) -> Path:
    """Compute used per stop reason (stacked) against running every trial to max_epochs."""
    from camotune.results.leaderboard import compute

    plt = pyplot()
    c = compute(sweep)
    df = sweep.trials
    fig, ax = plt.subplots(figsize=(6.5, 4))
    bottom = 0.0
    for reason, seconds in df.groupby("stop_reason")["compute_seconds"].sum().items():
        ax.bar(0, seconds, bottom=bottom, color=colour(str(reason)), label=str(reason))
        bottom += float(seconds)
    ax.bar(1, c["full"], color="#cccccc", label="every trial to the end (estimate)")
    ax.set_xticks([0, 1], ["used", f"all trials x {sweep.max_epochs} epochs"])
    unit = "GPU-seconds" if float(sweep.settings.get("gpus_per_trial") or 0) > 0 \
        else "CPU-seconds"
    ax.set_ylabel(unit)
    saved = ("" if math.isnan(c["saved_fraction"])
             else f": {100 * c['saved_fraction']:.0f}% saved")
    if c["unfinished"]:
        saved = f" ({c['unfinished']} trial(s) unfinished)"
    ax.set_title(f"{sweep.name}: compute used {c['used']:.0f} vs {c['full']:.0f}{saved}")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def write_plots(sweep: Sweep, out_dir: str | Path) -> tuple[dict[str, Path], list[str]]:
    """Write every plot into ``out_dir`` (created): ``learning_curves.png``,
    ``params_vs_iou.png``, ``importance.png``, ``rung_bias.png``, ``compute.png``. Returns
    (name -> path of the plots written, notes: warnings and why a plot was skipped)."""
    from camotune.results.importance import importance_plot, rung_bias_plot

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    notes = edge_warnings(sweep)
    if sweep.trials.empty:
        return written, [*notes, "no trial has started: no plots"]
    written["learning_curves"] = learning_curves(sweep, out / "learning_curves.png")
    p = params_vs_iou(sweep, out / "params_vs_iou.png")
    if p is not None:
        written["params_vs_iou"] = p
    for name, fn in (("importance", importance_plot), ("rung_bias", rung_bias_plot)):
        p, note = fn(sweep, out / f"{name}.png")
        if p is not None:
            written[name] = p
        if note:
            notes.append(note)
    written["compute"] = compute_plot(sweep, out / "compute.png")
    log.info("plots dir=%s written=%s", out, ",".join(written))
    return written, notes
