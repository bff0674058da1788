"""Parameter importance (Optuna's fANOVA) and ASHA's rung bias, as plots.

Importance is computed on an in-memory Optuna study built from the sweep's trials that
produced a val_iou (target: each trial's best val_iou; a trial ASHA stopped counts with the best
it reached), so it works for any sweep, sampled or factorial, whatever searcher ran it.

Rung bias asks whether ASHA's first cut favours some values for reasons other than final
quality (small batches take more optimizer steps by epoch 2): for each searched parameter, its
distribution among the trials that passed the first rung against all trials judged there.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from camotune.results.plots import natural_key, pyplot, save_figure, space_dists
from camotune.results.read import UNFINISHED, Sweep

log = logging.getLogger(__name__)

MIN_TRIALS = 8  # fANOVA on fewer trials is noise


def _distributions(sweep: Sweep) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution

    from camotune.spaces import Dist

    out: dict[str, Any] = {}
    for name, spec in space_dists(sweep).items():
        out[name] = Dist.from_dict(spec).to_optuna()
    if "seed" in sweep.params and "seed" not in out:
        seeds = sorted({int(s) for s in sweep.trials["seed"].dropna()})
        if len(seeds) > 1:
            out["seed"] = CategoricalDistribution(seeds)
    return out


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def param_importances(sweep: Sweep, *, seed: int = 0) -> dict[str, float] | None:
    """fANOVA importances (normalised to sum 1) of the searched params for best val_iou, or
    None with fewer than ``MIN_TRIALS`` trials that have a value. Params that never varied
    among those trials are left out (Optuna cannot split on them)."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    df = sweep.trials[sweep.trials["best_val_iou"].notna()]
    if len(df) < MIN_TRIALS:
        return None
    dists = _distributions(sweep)
    varied = [p for p in dists if p in df.columns and df[p].astype(str).nunique() > 1]
    if not varied:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for _, t in df.iterrows():
        params = {p: _plain(t[p]) for p in varied}
        try:
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={p: dists[p] for p in varied},
                value=float(t["best_val_iou"])))
        except ValueError as exc:  # a value outside its distribution (an edited space file)
            log.warning("importance: trial %s left out (%s)", t["trial_id"], exc)
    if len(study.trials) < MIN_TRIALS:
        return None
    imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    return {k: float(v) for k, v in imp.items()}


def importance_plot(sweep: Sweep, path: Path) -> tuple[Path | None, str | None]:
    """Horizontal bars of `param_importances`; (None, why) when too few trials finished."""
    n = int(sweep.trials["best_val_iou"].notna().sum())
    imp = param_importances(sweep)
    if imp is None:
        return None, (f"importance: skipped, {n} trial(s) with a val_iou "
                      f"(fANOVA needs at least {MIN_TRIALS} and a searched parameter that varied)")
    plt = pyplot()
    names = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(names) + 1.6))
    ax.barh(names, [imp[k] for k in names], color="#1b9e77")
    for i, k in enumerate(names):
        ax.text(imp[k], i, f" {imp[k]:.2f}", va="center", fontsize=8)
    ax.set_xlabel("fANOVA importance (share of the variance of best val_iou)")
    ax.set_xlim(0, max(imp.values()) * 1.2 or 1)
    ax.set_title(f"{sweep.name}: parameter importance ({n} trials)")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path), None


def rung_groups(sweep: Sweep) -> tuple[pd.DataFrame, pd.Series] | None:
    """(trials judged at the first rung, whether each passed it), or None without rungs.

    Judged: ended trials, and unfinished ones that already ran past the rung. Passed: ran more
    epochs than the rung."""
    rungs = sweep.rungs()
    if not rungs or rungs[0] >= sweep.max_epochs:
        return None
    first = rungs[0]
    df = sweep.trials
    judged = df[~df["stop_reason"].isin(UNFINISHED) | (df["epochs"] > first)]
    return judged, judged["epochs"] > first


def rung_bias_plot(sweep: Sweep, path: Path) -> tuple[Path | None, str | None]:
    """One panel per searched param: its distribution among all trials judged at the first
    rung (grey) and among those that passed it (colour); categories as shares with the pass
    rate above each, numeric params as histograms (log bins for loguniform)."""
    groups = rung_groups(sweep)
    if groups is None:
        return None, "rung bias: skipped, the sweep has no ASHA rung before its last epoch"
    judged, passed = groups
    params = list(sweep.params)
    if judged.empty or not passed.any() or not params:
        return None, "rung bias: skipped, no trial has passed the first rung yet"
    plt = pyplot()
    dists = space_dists(sweep)
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, params, strict=False):
        kind = dists.get(name, {}).get("type", "choice")
        values = judged[name]
        if kind in ("loguniform", "uniform", "int"):
            x = values.astype(float)
            lo, hi = float(x.min()), float(x.max())
            log_axis = kind == "loguniform" and lo > 0
            bins = (np.geomspace(lo, hi * 1.0001, 9) if log_axis and hi > lo
                    else np.linspace(lo, hi + 1e-12, 9))
            ax.hist(x, bins=bins, color="#cccccc", label="all judged")
            ax.hist(x[passed], bins=bins, color="#7570b3", alpha=0.9, label="passed")
            if log_axis:
                ax.set_xscale("log")
            ax.set_ylabel("trials")
        else:
            cats = sorted(map(str, values.unique()), key=natural_key)
            text = values.map(str)
            share_all = [float((text == c).mean()) for c in cats]
            share_pass = [float((text[passed] == c).mean()) for c in cats]
            xs = np.arange(len(cats))
            ax.bar(xs - 0.2, share_all, 0.4, color="#cccccc", label="all judged")
            ax.bar(xs + 0.2, share_pass, 0.4, color="#7570b3", label="passed")
            for i, c in enumerate(cats):
                n, k = int((text == c).sum()), int((text[passed] == c).sum())
                ax.text(i, max(share_all[i], share_pass[i]) + 0.02, f"{k}/{n} pass",
                        ha="center", fontsize=7)
            ax.set_xticks(xs, cats)
            ax.set_ylim(0, 1.15)
            ax.set_ylabel("share of trials")
        ax.set_xlabel(name)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(params):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{sweep.name}: who passes the first ASHA rung (epoch {sweep.rungs()[0]}): "
                 f"{int(passed.sum())} of {len(judged)} trials")
    return save_figure(fig, path), None
