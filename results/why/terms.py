"""The term table: each main effect and 2FI with its effect, CI, p and Holm-adjusted p.

Convention: with factors coded -1 (good level) and +1 (bad level), a term's *effect* is twice
its OLS coefficient: for a main effect, the change in the response from the good to the bad
level averaged over the other factors; for a 2FI ``a:b``, how much the effect of ``a`` at
``b``'s bad level exceeds its effect at ``b``'s good level, halved. CIs are the coefficient's
t interval (level ``1 - alpha``) doubled; p-values are the coefficient's two-sided t test.

The family for Holm's correction is the model's factor terms of one response (the intercept
and seed blocks are not in it). *significant* means Holm-adjusted p < alpha. A term with no
residual degrees of freedom has NaN p and is left out of the family.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from statsmodels.stats.multitest import multipletests

from .aliases import alias_map
from .fit import Fit

__all__ = ["holm", "term_table"]


def holm(p_values: list[float], alpha: float) -> list[float]:
    """Holm-adjusted p-values; NaN entries stay NaN and do not count in the family."""
    finite = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    out = [math.nan] * len(p_values)
    if finite:
        adjusted = multipletests([p_values[i] for i in finite], alpha=alpha, method="holm")[1]
        for i, p in zip(finite, adjusted, strict=True):
            out[i] = float(p)
    return out


def term_table(fit: Fit) -> list[dict[str, Any]]:
    """One dict per model term (factor order, mains first): ``term``, ``order``, ``effect``,
    ``ci`` [low, high], ``p``, ``p_adjusted``, ``significant``, ``aliased_with`` (higher-order
    effects with the same column, by name), then one per dropped term with ``effect`` None and
    ``aliased_with`` the kept terms it cannot be told from."""
    res = fit.results
    names = fit.param_terms()
    dof = float(res.df_resid)
    ci = res.conf_int(alpha=fit.alpha) if dof > 0 else None
    aliases = alias_map(fit)
    rows = []
    for param, term in names.items():
        p = float(res.pvalues[param]) if dof > 0 else math.nan
        low, high = (2 * float(ci.loc[param, 0]), 2 * float(ci.loc[param, 1])) if ci is not None \
            else (math.nan, math.nan)
        rows.append({"term": fit.name(term), "order": len(term),
                     "effect": 2 * float(res.params[param]), "ci": [low, high],
                     "p": p if np.isfinite(p) else math.nan,
                     "aliased_with": aliases.get(fit.name(term), [])})
    adjusted = holm([r["p"] for r in rows], fit.alpha)
    for row, p_adj in zip(rows, adjusted, strict=True):
        row["p_adjusted"] = p_adj
        row["significant"] = bool(math.isfinite(p_adj) and p_adj < fit.alpha)
    for term, kept in fit.dropped.items():
        with_ = [("-" if sign < 0 else "") + (fit.name(t) if t else "the intercept")
                 for sign, t in kept]
        rows.append({"term": fit.name(term), "order": len(term), "effect": None,
                     "ci": [None, None], "p": None, "p_adjusted": None, "significant": False,
                     "aliased_with": with_, "dropped": True})
    return rows
