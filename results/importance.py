"""Parameter importance (Optuna's fANOVA) and ASHA's rung bias, as plots.

Importance is computed on an in-memory Optuna study built from comparable trials only: those
that reached one common epoch E, each scored by its best val_iou over epochs 1..E, so a trial
ASHA stopped at epoch 2 is never ranked against another's value at epoch 40 (see
`comparable_trials` for how E is chosen). It works for any sweep, sampled or factorial,
whatever searcher ran it.

Rung bias asks whether ASHA's first cut favours some values for reasons other than final
quality (small batches take more optimizer steps by epoch 2): for each searched parameter, its
distribution among the trials that passed the first rung against all trials judged there.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Comparable:
    """The trials importance is computed on: those that reached ``epoch``, with ``value`` = the
    best val_iou of each over epochs 1..``epoch`` (a column of ``trials``). ``rule`` says why
    this epoch: ``"last epoch"`` or ``"reached by the most trials"``."""

    epoch: int
    trials: pd.DataFrame
    rule: str

    def describe(self) -> str:
        return f"{len(self.trials)} trial(s) that reached epoch {self.epoch} ({self.rule})"


def _best_until(history: list[dict[str, Any]], epoch: int) -> float | None:
    values = [float(r["val_iou"]) for r in history
              if int(r.get("epoch") or 0) <= epoch and r.get("val_iou") is not None
              and not math.isnan(float(r["val_iou"]))]
    return max(values) if values else None


def comparable_trials(sweep: Sweep, *, min_trials: int = MIN_TRIALS) -> Comparable | None:
    """The common epoch E and the trials that reached it, or None when no trial ran an epoch.

    E is the sweep's last epoch (``max_epochs``) when at least ``min_trials`` trials reached it;
    otherwise the latest epoch among those reached by the most trials (with ASHA usually the
    first rung: every trial judged there reached it). A trial reached E when its history holds
    epoch E; a trial that stopped earlier (ASHA, collapse, divergence) is left out, as is one
    without any val_iou up to E.
    """
    df = sweep.trials
    reached = {int(r["epoch"]) for h in df["history"] for r in h if r.get("epoch") is not None}
    if not reached:
        return None

    def at(epoch: int) -> pd.DataFrame:
        values = df["history"].map(
            lambda h: _best_until(h, epoch) if any(int(r.get("epoch") or 0) >= epoch
                                                   for r in h) else None)
        out = df.assign(value=pd.to_numeric(values).astype(float))
        return out[out["value"].notna()]

    last = at(sweep.max_epochs)
    if len(last) >= min_trials:
        return Comparable(sweep.max_epochs, last, "last epoch")
    counts = {e: len(at(e)) for e in sorted(reached)}
    most = max(counts.values())
    epoch = max(e for e, n in counts.items() if n == most)
    return Comparable(epoch, at(epoch), "reached by the most trials")


def param_importances(sweep: Sweep, *, seed: int = 0,
                      basis: Comparable | None = None) -> dict[str, float] | None:
    """fANOVA importances (normalised to sum 1) of the searched params for the best val_iou up
    to the common epoch of `comparable_trials` (or ``basis``), or None with fewer than
    ``MIN_TRIALS`` such trials. Params that never varied among those trials are left out
    (Optuna cannot split on them)."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    basis = basis if basis is not None else comparable_trials(sweep)
    if basis is None or len(basis.trials) < MIN_TRIALS:
        return None
    df = basis.trials
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
                value=float(t["value"])))
        except ValueError as exc:  # a value outside its distribution (an edited space file)
            log.warning("importance: trial %s left out (%s)", t["trial_id"], exc)
    if len(study.trials) < MIN_TRIALS:
        return None
    imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    return {k: float(v) for k, v in imp.items()}


def importance_plot(sweep: Sweep, path: Path) -> tuple[Path | None, str]:
    """Horizontal bars of `param_importances`, and a note saying which epoch and how many
    trials it used; (None, why) when it cannot be computed."""
    basis = comparable_trials(sweep)
    imp = param_importances(sweep, basis=basis) if basis is not None else None
    if basis is None or imp is None:
        used = basis.describe() if basis is not None else "no trial with a val_iou"
        return None, (f"importance: skipped, {used} (fANOVA needs at least {MIN_TRIALS} "
                      "comparable trials and a searched parameter that varied)")
    plt = pyplot()
    names = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(names) + 1.8))
    ax.barh(names, [imp[k] for k in names], color="#1b9e77")
    for i, k in enumerate(names):
        ax.text(imp[k], i, f" {imp[k]:.2f}", va="center", fontsize=8)
    ax.set_xlabel(f"fANOVA importance (share of the variance of best val_iou up to epoch "
                  f"{basis.epoch})")
    ax.set_xlim(0, max(imp.values()) * 1.2 or 1)
    ax.set_title(f"{sweep.name}: parameter importance\n{basis.describe()}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path), f"importance: fANOVA on {basis.describe()}"


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


BIAS_BINS = 5  # numeric params: value bins of the rung-bias plot (log-spaced for loguniform)


def _bias_categories(values: pd.Series, kind: str) -> tuple[pd.Series, list[str]]:
    """Each value's category label and the labels in axis order: choices as they are, numeric
    params (with more than ``BIAS_BINS`` distinct values) as ``BIAS_BINS`` value ranges."""
    numeric = kind in ("loguniform", "uniform", "int")
    if not numeric or values.nunique() <= BIAS_BINS:
        cats = sorted(map(str, values.unique()), key=natural_key)
        if numeric:
            cats = [f"{float(c):.3g}" for c in cats]
            return values.astype(float).map(lambda v: f"{v:.3g}"), cats
        return values.map(str), cats
    x = values.astype(float)
    lo, hi = float(x.min()), float(x.max())
    edges = (np.geomspace(lo, hi, BIAS_BINS + 1) if kind == "loguniform" and lo > 0
             else np.linspace(lo, hi, BIAS_BINS + 1))
    cats = [f"{a:.2g}-{b:.2g}" for a, b in itertools.pairwise(edges)]
    index = np.clip(np.searchsorted(edges, x.to_numpy(), side="right") - 1, 0, BIAS_BINS - 1)
    return pd.Series([cats[i] for i in index], index=values.index), cats


def rung_bias_plot(sweep: Sweep, path: Path) -> tuple[Path | None, str | None]:
    """`rung_bias_figure` written to ``path``; (None, why) when there is nothing to show."""
    fig, note = rung_bias_figure(sweep)
    return (None, note) if fig is None else (save_figure(fig, path, layout=False), None)


def rung_bias_figure(sweep: Sweep):
    """(Figure, None), or (None, why) without a rung or a trial past it.

    One panel per searched param, all on one y scale (share of trials): for each choice, or each of ``BIAS_BINS`` value ranges of a numeric param, its share among all
    trials judged at the first rung (grey) and among those that passed it (colour), with
    "passed/judged" above. Equal bars mean the rung does not favour that value."""
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
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows + 0.6), squeeze=False,
                             sharey=True, layout="constrained")
    top = 0.0
    for ax, name in zip(axes.flat, params, strict=False):
        kind = dists.get(name, {}).get("type", "choice")
        text, cats = _bias_categories(judged[name], kind)
        share_all = [float((text == c).mean()) for c in cats]
        share_pass = [float((text[passed] == c).mean()) for c in cats]
        top = max(top, *share_all, *share_pass)
        xs = np.arange(len(cats))
        ax.bar(xs - 0.2, share_all, 0.4, color="#cccccc", label="all judged")
        ax.bar(xs + 0.2, share_pass, 0.4, color="#7570b3", label="passed")
        for i, c in enumerate(cats):
            n, k = int((text == c).sum()), int((text[passed] == c).sum())
            ax.text(i, max(share_all[i], share_pass[i]) + 0.02, f"{k}/{n}", ha="center",
                    fontsize=7)
        rotate = len(cats) > 3 or max(map(len, cats)) > 6
        ax.set_xticks(xs, cats, rotation=30 if rotate else 0, ha="right" if rotate else "center",
                      fontsize=8)
        ax.set_xlabel(name + (" (log bins)" if kind == "loguniform" else ""))
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylim(0, min(1.0, top) + 0.12)  # shared by every panel
    for r in range(rows):
        axes[r, 0].set_ylabel("share of trials")
    for ax in list(axes.flat)[len(params):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{sweep.name}: who passes the first ASHA rung (epoch {sweep.rungs()[0]}): "
                 f"{int(passed.sum())} of {len(judged)} trials (passed/judged above the bars)",
                 fontsize=10)
    return fig, None
