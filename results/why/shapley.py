"""Shapley split of the fitted gap over the factors.

The game: ``v(S)`` is the fitted response of the bad run with the factors in ``S`` reverted to
the good run's levels, so ``v(all) - v(none)`` is the fitted gap (good minus bad). A factor's
share is its marginal contribution ``v(S + i) - v(S)`` averaged over all orderings of the
factors (exact enumeration over the ``2^(k-1)`` subsets of the others). Each share is a fixed
linear combination of fitted cells, hence of the coefficients, so it gets a t interval from the
coefficient covariance (statsmodels ``t_test``), and the shares sum exactly to the fitted gap.

On a model with main effects and two-factor interactions only, an interaction ``x_i x_j`` has
the same value at both corners and its marginal contributions cancel over the orderings: the
interactions add nothing to any share, and each share is minus the factor's main effect.
Interactions show in the undo and apply contrasts instead.
"""

from __future__ import annotations

from math import factorial
from typing import Any

from .contrasts import corner, fitted, moved
from .fit import Fit, Point

__all__ = ["INTERACTIONS_NOTE", "shapley_shares", "shapley_weights"]

INTERACTIONS_NOTE = ("Two-factor interactions take the same value at both corners, so they add "
                     "nothing to the gap or to any Shapley share; whether changes act together "
                     "shows in the undo and apply effects.")


def shapley_weights(k: int, i: int, start: Point) -> dict[Point, float]:
    """Factor ``i``'s share as cell weights, reverting from ``start`` (the bad corner)."""
    others = [j for j in range(k) if j != i]
    weights: dict[Point, float] = {}
    for mask in range(2 ** (k - 1)):
        subset = [others[b] for b in range(k - 1) if mask >> b & 1]
        w = factorial(len(subset)) * factorial(k - len(subset) - 1) / factorial(k)
        with_i, without = moved(start, [*subset, i]), moved(start, subset)
        weights[with_i] = weights.get(with_i, 0.0) + w
        weights[without] = weights.get(without, 0.0) - w
    return weights


def shapley_shares(fit: Fit) -> dict[str, dict[str, Any]]:
    """Factor name -> ``{value, ci}``: its share of the fitted gap (good minus bad)."""
    start = corner(fit, 1)
    out = {}
    for i, name in enumerate(fit.factors):
        est = fitted(fit, shapley_weights(fit.k, i, start))
        out[name] = {"value": est.value, "ci": est.ci}
    return out
