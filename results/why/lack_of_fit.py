"""Lack of fit: do the effects the model leaves out (three-factor and higher) matter?

The model (mains + 2FIs + seed blocks) is compared with the saturated model of one mean per
cell plus the seed blocks (``y ~ C(cell) + C(seed)``), by statsmodels' ``anova_lm``. The
saturated model's residual degrees of freedom are the *pure-error* dof: what seed replication
alone says about noise. The F test has ``(cells - model cell terms, pure-error dof)`` degrees of
freedom. It cannot run without replicates (pure-error dof 0) or when the model already uses
every cell (nothing left out to test); F and p are then NaN and ``reason`` says which.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm

from .aliases import left_out_groups
from .fit import Fit

__all__ = ["lack_of_fit"]


def lack_of_fit(fit: Fit) -> dict[str, Any]:
    """``{F, p, dof: [lack-of-fit dof, pure-error dof], pure_error_dof, left_out, reason,
    nothing_left_out}``; ``left_out`` lists the left-out effects the cells can estimate, in
    alias groups; ``nothing_left_out`` is True for one or two factors (the model is complete)."""
    data = fit.data
    blocks = " + C(seed)" if len(fit.seeds) > 1 else ""
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        full = smf.ols("y ~ C(cell)" + blocks, data=data).fit()
    pure = round(full.df_resid)
    lof_dof = round(fit.results.df_resid - full.df_resid)
    out: dict[str, Any] = {"F": math.nan, "p": math.nan, "dof": [lof_dof, pure],
                           "pure_error_dof": pure, "left_out": left_out_groups(fit),
                           "reason": "", "nothing_left_out": False}
    if pure <= 0:
        out["reason"] = ("no replicates: the pure-error dof is 0, so the left-out terms "
                         "cannot be tested (run more seeds)")
        return out
    if lof_dof <= 0 and fit.k <= 2:
        out["reason"] = "nothing is left out: the model holds every effect of the factors"
        out["nothing_left_out"] = True
        return out
    if lof_dof <= 0:
        out["reason"] = ("the model uses every cell: nothing left out can be tested "
                         "(the left-out effects are aliased with model terms)")
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = anova_lm(fit.results, full)
    out["F"] = float(table["F"].iloc[1])
    out["p"] = float(table["Pr(>F)"].iloc[1])
    return out
