"""Contrasts between cells: the gap, reverting changes from the bad run, applying them to the
good run, each observed (from cell means over seeds) and fitted (on the model, with a CI).

A contrast is a weighted sum of cells, ``{point: weight}`` with weights summing to 0 (the
seed blocks then cancel). *Observed*: for each seed that has a value in every cell involved,
the weighted sum of that seed's cell means; the estimate is their mean and its CI the t
interval over those seeds (seeds are blocks, so the comparison is paired). With one such seed
the CI is NaN. *Fitted*: the same weights on the model's fitted cells, a linear contrast of
the coefficients (statsmodels ``t_test``), with its t interval.

Sign convention: the gap is good minus bad; an undo value is the reverted cell minus the bad
corner (positive for a response where good is higher, e.g. IoU); an apply value is the changed
cell minus the good corner. ``recovered_fraction`` of an undo is its value over the gap;
``gap_fraction`` of an apply is its value over (bad minus good), the share of the damage the
change alone reproduces.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats

from .fit import Fit, Point

__all__ = ["Estimate", "Gap", "apply_effects", "cell_means", "corner", "fitted", "gap", "moved",
           "observed", "undo_effects"]


@dataclass(frozen=True)
class Estimate:
    """A contrast's value, its CI and the dof behind it (seeds - 1 when observed)."""

    value: float
    low: float
    high: float
    dof: float
    n_seeds: int = 0

    @property
    def ci(self) -> list[float]:
        return [self.low, self.high]


def corner(fit: Fit, sign: int) -> Point:
    """The all-good (``sign=-1``) or all-bad (``+1``) cell."""
    return (sign,) * fit.k


def moved(start: Point, factors: Iterable[int]) -> Point:
    """``start`` with the given factor indices switched to the other level."""
    flip = set(factors)
    return tuple(-v if i in flip else v for i, v in enumerate(start))


def fitted(fit: Fit, weights: Mapping[Point, float]) -> Estimate:
    """The contrast on the model; NaN CI when the model has no residual dof."""
    c = sum(w * fit.row(p) for p, w in weights.items())
    res = fit.results
    value = float(c @ res.params.to_numpy())
    dof = float(res.df_resid)
    if dof <= 0:
        return Estimate(value, math.nan, math.nan, dof)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        test = res.t_test(c[None, :])
    low, high = (float(v) for v in np.asarray(test.conf_int(alpha=fit.alpha)).ravel())
    return Estimate(value, low, high, dof)


def cell_means(fit: Fit) -> dict[Point, dict[Any, float]]:
    """Cell -> seed -> mean response of that cell's rows for that seed."""
    means = fit.data.groupby(["point", "seed"], sort=False)["y"].mean()
    out: dict[Point, dict[Any, float]] = {}
    for (point, seed), value in means.items():
        out.setdefault(point, {})[seed] = float(value)
    return out


def observed(fit: Fit, weights: Mapping[Point, float],
             means: Mapping[Point, Mapping[Any, float]] | None = None) -> Estimate | None:
    """The contrast from cell means, paired over seeds; None when no seed has every cell."""
    means = cell_means(fit) if means is None else means
    if any(p not in means for p in weights):
        return None
    common = set.intersection(*(set(means[p]) for p in weights))
    seeds = [s for s in fit.seeds if s in common]
    if not seeds:
        return None
    per_seed = np.array([sum(w * means[p][s] for p, w in weights.items()) for s in seeds])
    value = float(per_seed.mean())
    n = len(seeds)
    if n < 2:
        return Estimate(value, math.nan, math.nan, 0.0, n)
    half = stats.t.ppf(1 - fit.alpha / 2, n - 1) * per_seed.std(ddof=1) / math.sqrt(n)
    return Estimate(value, value - half, value + half, float(n - 1), n)


@dataclass(frozen=True)
class Gap:
    """Good corner minus bad corner: observed (None when a corner has no value) and fitted."""

    observed: Estimate | None
    fitted: Estimate

    def to_dict(self) -> dict[str, Any]:
        obs = self.observed
        return {"observed": None if obs is None else obs.value,
                "observed_ci": [math.nan, math.nan] if obs is None else obs.ci,
                "n_seeds": 0 if obs is None else obs.n_seeds,
                "fitted": self.fitted.value, "fitted_ci": self.fitted.ci,
                "ci": (obs if obs is not None else self.fitted).ci}


def gap(fit: Fit) -> Gap:
    """The gap between the corners (see `Gap`)."""
    weights = {corner(fit, -1): 1.0, corner(fit, 1): -1.0}
    return Gap(observed(fit, weights), fitted(fit, weights))


def _ratio(value: float, whole: float | None) -> float:
    if whole is None or not math.isfinite(whole) or abs(whole) < 1e-12:
        return math.nan
    return value / whole


def _entry(fit: Fit, start: Point, changed: Sequence[int], whole: tuple[float | None, float],
           fraction_key: str, means: Mapping) -> dict[str, Any]:
    weights = {moved(start, changed): 1.0, start: -1.0}
    obs, fit_est = observed(fit, weights, means), fitted(fit, weights)
    use = obs if obs is not None else fit_est
    reference = whole[0] if obs is not None else whole[1]
    return {"set": [fit.factors[i] for i in changed], "value": use.value, "ci": use.ci,
            "observed": obs is not None, fraction_key: _ratio(use.value, reference),
            "n_seeds": 0 if obs is None else obs.n_seeds,
            "fitted": fit_est.value, "fitted_ci": fit_est.ci}


def _sets(k: int, max_size: int) -> list[tuple[int, ...]]:
    return [s for size in range(1, min(max_size, k) + 1) for s in combinations(range(k), size)]


def undo_effects(fit: Fit, the_gap: Gap, max_size: int = 2) -> list[dict[str, Any]]:
    """From the bad corner, revert each single change and each pair (``max_size``). ``value``
    and ``ci`` are observed where every cell was run (``observed`` True), else fitted; the
    fitted pair is always there too (``fitted``, ``fitted_ci``)."""
    means = cell_means(fit)
    whole = (None if the_gap.observed is None else the_gap.observed.value, the_gap.fitted.value)
    return [_entry(fit, corner(fit, 1), s, whole, "recovered_fraction", means)
            for s in _sets(fit.k, max_size)]


def apply_effects(fit: Fit, the_gap: Gap, max_size: int = 2) -> list[dict[str, Any]]:
    """From the good corner, apply each single change and each pair (``max_size``); the
    fraction is of the damage, bad minus good."""
    means = cell_means(fit)
    whole = (None if the_gap.observed is None else -the_gap.observed.value,
             -the_gap.fitted.value)
    return [_entry(fit, corner(fit, -1), s, whole, "gap_fraction", means)
            for s in _sets(fit.k, max_size)]
