"""Which settings explain a collapse: effects of a two-level factorial sweep, with CIs.

A factorial sweep (``design: {type: factorial, ...}`` in a space file) runs every factor at two
levels: the first level of each factor is the setting of the run that worked (coded -1), the
second the setting of the run that collapsed (coded +1). Fitting an ordinary least-squares
model with an intercept, the main effects and the estimable two-factor interactions on those
coded columns gives, for each term, the change in the response between the two levels, and the
repeats over seeds give its confidence interval. A fractional design cannot tell some terms
apart (they are *aliased*): those are reported, not fitted twice.

``separating_parameters`` works for any sweep: which parameters tell collapsed and diverged
trials from the rest. The wording (``verdict``, ``attribution_report``) lives in
:mod:`camotune.results.attribution_text` and is re-exported here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from camotune.errors import BadInput
from camotune.results.attribution_text import attribution_report, verdict

__all__ = [
    "EFFECT_COLUMNS",
    "GAP_COLUMNS",
    "SEPARATION_COLUMNS",
    "attribution_report",
    "ema_gap",
    "factorial_effects",
    "separating_parameters",
    "verdict",
]

log = logging.getLogger(__name__)

EFFECT_COLUMNS = ["term", "effect", "ci_low", "ci_high", "p_value", "significant", "aliased_with"]
GAP_COLUMNS = ["factor", "level", "n", "mean_ema", "mean_raw", "mean_gap", "ci_low", "ci_high"]
SEPARATION_COLUMNS = ["param", "kind", "n_bad", "n_other", "median_bad", "median_other",
                      "rule", "threshold", "accuracy", "bad_rate_by_value", "test", "p_value"]

# Outcomes whose missing IoU *is* the result being studied: the setting produced no usable
# model. Any other trial without a value (oom, error, still running) says nothing about it.
FAILED_AS_ZERO = ("diverged", "collapsed")


def _as_bool(value: Any) -> bool | None:
    """True/False for bools, 0/1 and "true"/"false" strings; None for anything else."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    return None


def _same(value: Any, level: Any) -> bool:
    """Whether a recorded factor value is the design level (floats compared to 1e-9 rel.)."""
    if isinstance(level, (bool, np.bool_)) or isinstance(value, (bool, np.bool_)):
        return _as_bool(value) is not None and _as_bool(value) == _as_bool(level)
    try:
        return math.isclose(float(value), float(level), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(value) == str(level)


def _code(column: pd.Series, factor: str, first: Any, second: Any) -> np.ndarray:
    """-1 where the column holds ``first``, +1 where it holds ``second``; BadInput otherwise."""
    mapping: dict[Any, float] = {}
    for value in column.unique():
        if _same(value, first):
            mapping[value] = -1.0
        elif _same(value, second):
            mapping[value] = 1.0
        else:
            n = int((column == value).sum()) if value == value else int(column.isna().sum())
            raise BadInput(f"factor {factor}: value {value} in {n} trial(s) is neither design "
                           f"level {first} nor {second}")
    return column.map(mapping).to_numpy(dtype=float)


def _response_values(df: pd.DataFrame, response: str, missing: str) -> tuple[pd.Series, int, int]:
    """The response with missing values filled or dropped: (values, n_zeroed, n_dropped)."""
    if missing not in ("zero", "drop"):
        raise ValueError(f"missing must be 'zero' or 'drop', not {missing!r}")
    if response not in df.columns:
        raise BadInput(f"results have no column {response!r} (columns: {', '.join(df.columns)})")
    try:
        y = pd.to_numeric(df[response]).astype(float)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"column {response!r} is not numeric: {exc}") from None
    nan = y.isna()
    if missing == "zero":
        failed = (df["stop_reason"].isin(FAILED_AS_ZERO) if "stop_reason" in df.columns
                  else pd.Series(True, index=df.index))
        zero = nan & failed
        y = y.mask(zero, 0.0)
        n_zeroed = int(zero.sum())
    else:
        n_zeroed = 0
    kept = y.dropna()
    return kept, n_zeroed, len(y) - len(kept)


def _alias_text(coef: np.ndarray, names: Sequence[str]) -> list[tuple[str, str]]:
    """(kept term, signed text) for each kept column a dropped column is a combination of."""
    out = []
    for c, name in zip(coef, names, strict=True):
        if abs(c) < 1e-6:
            continue
        sign = "-" if c < 0 else ""
        scale = "" if math.isclose(abs(c), 1.0, rel_tol=1e-6) else f"{abs(c):.3g}*"
        out.append((name, f"{sign}{scale}{name}"))
    return out


def factorial_effects(df: pd.DataFrame, levels: Mapping[str, Sequence[Any]], response: str, *,
                      alpha: float = 0.05, interactions: bool = True,
                      missing: str = "zero") -> pd.DataFrame:
    """Main effects and two-factor interactions of a two-level design, with CIs.

    ``df`` has one row per trial: a column per factor holding the value the trial ran with,
    the ``response`` column and, optionally, ``stop_reason`` and ``seed``. ``levels`` maps each
    factor to ``(first, second)``; first is coded -1, second +1. Floats match their level to a
    relative 1e-9; bools also match "true"/"false" and 0/1. A value matching neither level,
    or a missing column, raises ``BadInput``.

    The effect of a term is twice its OLS coefficient: for a main effect in a balanced design,
    the mean response at the second level minus the mean at the first. An interaction ``a:b``
    is half the difference between a's effect at b's second level and at b's first level, so
    a's effect is ``effect(a) + effect(a:b)`` at b's second level and ``effect(a) - effect(a:b)``
    at its first.

    Aliasing: columns are taken in the order intercept, main effects (in ``levels`` order),
    interactions; a column that is a linear combination of the columns already kept is not
    fitted. Its row has ``effect`` NaN and ``aliased_with`` naming what it equals (a leading
    "-" for a negated column, e.g. "-c:d"); the kept term's ``aliased_with`` lists it, and the
    kept term's estimate is the sum of the aliased effects. A factor at a single level in the
    data is aliased with "intercept".

    Missing responses: with ``missing="zero"`` (default) a trial whose ``stop_reason`` is
    diverged or collapsed and whose response is NaN scores 0 (it produced no usable model:
    that is the outcome under study); NaN from any other trial (oom, error, still running) is
    dropped. Without a ``stop_reason`` column every NaN scores 0. ``missing="drop"`` drops
    every NaN, which leaves the design unbalanced and the surviving terms slightly correlated.

    CIs are ``effect +- t(1 - alpha/2, dof) * se`` from the residual variance. With no residual
    degrees of freedom (one trial per design point and as many terms as points) ``ci_low``,
    ``ci_high`` and ``p_value`` are NaN and ``significant`` is False. ``significant`` means the
    CI excludes 0.

    Returns a DataFrame with columns ``EFFECT_COLUMNS`` (``term`` is "lr" or "batch_size:lr"),
    sorted by |effect| descending (aliased rows last). ``attrs["attribution"]`` holds what the
    verdict needs: response, levels, alpha, dof, n_trials, n_zeroed, n_dropped, n_points,
    repeats_min/max, mean (the fitted grand mean) and missing.
    """
    from scipy import stats

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), not {alpha}")
    if len(levels) == 0:
        raise BadInput("the design has no factors")
    odd = [f for f, pair in levels.items() if len(pair) != 2]
    if odd:
        raise BadInput(f"factor(s) {', '.join(odd)}: a two-level design needs exactly 2 levels")
    missing_cols = [f for f in levels if f not in df.columns]
    if missing_cols:
        raise BadInput(f"results have no column for factor(s) {', '.join(missing_cols)}")
    y, n_zeroed, n_dropped = _response_values(df, response, missing)
    if len(y) == 0:
        raise BadInput(f"no trial has a value of {response!r}")
    rows = df.loc[y.index]
    factors = list(levels)
    coded = {f: _code(rows[f], f, *levels[f]) for f in factors}

    names = ["intercept", *factors]
    cols = [np.ones(len(y)), *(coded[f] for f in factors)]
    if interactions:
        for a, b in combinations(factors, 2):
            names.append(f"{a}:{b}")
            cols.append(coded[a] * coded[b])
    x_all = np.column_stack(cols)

    kept: list[int] = []
    aliases: dict[str, list[str]] = {}  # kept term -> dropped terms it stands for
    dropped: dict[str, str] = {}  # dropped term -> what it equals
    for j, name in enumerate(names):
        cand = x_all[:, [*kept, j]]
        if np.linalg.matrix_rank(cand) > len(kept):
            kept.append(j)
            continue
        coef = np.linalg.lstsq(x_all[:, kept], x_all[:, j], rcond=None)[0]
        parts = _alias_text(coef, [names[k] for k in kept])
        dropped[name] = " + ".join(text for _, text in parts)
        for term, text in parts:
            sign = "-" if text.startswith("-") else ""
            aliases.setdefault(term, []).append(f"{sign}{name}")

    x = x_all[:, kept]
    values = y.to_numpy()
    beta, *_ = np.linalg.lstsq(x, values, rcond=None)
    dof = len(values) - len(kept)
    effect = 2.0 * beta
    if dof > 0:
        rss = float(np.sum((values - x @ beta) ** 2))
        cov = rss / dof * np.linalg.inv(x.T @ x)
        se = 2.0 * np.sqrt(np.clip(np.diag(cov), 0.0, None))
        half = stats.t.ppf(1.0 - alpha / 2.0, dof) * se
        with np.errstate(divide="ignore", invalid="ignore"):
            tval = np.abs(effect) / se
        # a perfect fit (se 0) of a zero effect is 0/0: no evidence of anything, p = 1
        tval = np.where((se == 0) & (effect == 0), 0.0, tval)
        p = 2.0 * stats.t.sf(tval, dof)
        low, high = effect - half, effect + half
    else:
        low = high = p = np.full(len(kept), np.nan)

    table = [
        {"term": names[k], "effect": effect[i], "ci_low": low[i], "ci_high": high[i],
         "p_value": p[i], "significant": bool(low[i] > 0 or high[i] < 0),
         "aliased_with": ", ".join(aliases.get(names[k], []))}
        for i, k in enumerate(kept) if k != 0
    ]
    if "intercept" in aliases:  # e.g. a factor held at one level: nothing to estimate
        log.warning("terms constant in the data: %s", ", ".join(aliases["intercept"]))
    table += [{"term": name, "effect": np.nan, "ci_low": np.nan, "ci_high": np.nan,
               "p_value": np.nan, "significant": False, "aliased_with": what}
              for name, what in dropped.items()]
    out = pd.DataFrame(table, columns=EFFECT_COLUMNS)
    out = out.sort_values("effect", key=lambda s: -s.abs(), na_position="last",
                          kind="stable").reset_index(drop=True)

    points = pd.Series(list(zip(*(coded[f] for f in factors), strict=True))).value_counts()
    out.attrs["attribution"] = {
        "response": response, "levels": {f: tuple(levels[f]) for f in factors},
        "alpha": alpha, "dof": dof, "n_trials": len(values), "n_zeroed": n_zeroed,
        "n_dropped": n_dropped, "n_points": len(points), "repeats_min": int(points.min()),
        "repeats_max": int(points.max()), "mean": float(beta[0]), "missing": missing,
    }
    log.info("attribution response=%s trials=%d dof=%d zeroed=%d dropped=%d aliased=%d",
             response, len(values), dof, n_zeroed, n_dropped, len(dropped))
    return out


def _mean_ci(values: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """Mean and its t-based CI; NaN bounds with fewer than two values."""
    from scipy import stats

    mean = float(np.mean(values)) if len(values) else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(1 - alpha / 2, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def ema_gap(df: pd.DataFrame, levels: Mapping[str, Sequence[Any]], *,
            ema_factor: str = "use_ema", ema_column: str = "val_iou_ema",
            raw_column: str = "val_iou_raw", alpha: float = 0.05) -> pd.DataFrame:
    """EMA weights against raw weights on the trials that kept an EMA.

    For each trial with EMA on (``ema_factor`` true; every row with both columns when the table
    has no ``ema_factor`` column), the gap is ``ema_column - raw_column``, both measured at the
    same epoch (the caller picks it when building the table). A gap well below 0 means the EMA
    weights score worse than the weights being trained: the lag of the average, not the
    training, is what validation saw. Rows with either value NaN are left out.

    Returns one row for all EMA trials (``factor`` "all", ``level`` "") and one per level of
    every other factor in ``levels``: ``GAP_COLUMNS``, with the mean gap and its t-based CI
    (NaN with fewer than two trials). An empty table with those columns when no trial
    qualifies. BadInput when a named column is missing.
    """
    for col in (ema_column, raw_column):
        if col not in df.columns:
            raise BadInput(f"results have no column {col!r}")
    rows = df
    if ema_factor in df.columns:
        on = df[ema_factor].map(_as_bool)
        rows = df[on.fillna(False).astype(bool)]
    ema = pd.to_numeric(rows[ema_column]).astype(float)
    raw = pd.to_numeric(rows[raw_column]).astype(float)
    ok = ema.notna() & raw.notna()
    rows, ema, raw = rows[ok], ema[ok], raw[ok]
    if len(rows) == 0:
        return pd.DataFrame(columns=GAP_COLUMNS)

    def summary(factor: str, level: str, mask: pd.Series) -> dict[str, Any]:
        gap, lo, hi = _mean_ci((ema[mask] - raw[mask]).to_numpy(), alpha)
        return {"factor": factor, "level": level, "n": int(mask.sum()),
                "mean_ema": float(ema[mask].mean()), "mean_raw": float(raw[mask].mean()),
                "mean_gap": gap, "ci_low": lo, "ci_high": hi}

    out = [summary("all", "", pd.Series(True, index=rows.index))]
    for factor, pair in levels.items():
        if factor == ema_factor or factor not in rows.columns:
            continue
        for level in pair:
            mask = rows[factor].map(lambda v, lv=level: _same(v, lv)).astype(bool)
            if mask.any():
                out.append(summary(factor, str(level), mask))
    return pd.DataFrame(out, columns=GAP_COLUMNS)


def _is_numeric(values: pd.Series) -> bool:
    """Numbers that are not bools (a bool column is a choice, not a scale)."""
    if pd.api.types.is_bool_dtype(values):
        return False
    if pd.api.types.is_numeric_dtype(values):
        return True
    return bool(values.map(lambda v: isinstance(v, (int, float, np.number))
                           and not isinstance(v, (bool, np.bool_))).all())


def _numeric_row(param: str, values: pd.Series, bad: pd.Series) -> dict[str, Any]:
    from scipy import stats

    v = values.to_numpy(dtype=float)
    is_bad = bad.to_numpy(dtype=bool)
    log_scale = bool((v > 0).all() and v.max() > 10 * v.min())
    t = np.log(v) if log_scale else v
    back = np.exp if log_scale else (lambda z: z)
    row: dict[str, Any] = {
        "kind": "numeric (log)" if log_scale else "numeric",
        "median_bad": float(back(np.median(t[is_bad]))),
        "median_other": float(back(np.median(t[~is_bad]))),
        "rule": "", "threshold": math.nan, "accuracy": 0.5, "bad_rate_by_value": "",
        "test": "mann-whitney", "p_value": 1.0,
    }
    uniq = np.unique(t)
    if len(uniq) < 2:
        return row
    row["p_value"] = float(stats.mannwhitneyu(t[is_bad], t[~is_bad]).pvalue)
    mids = (uniq[:-1] + uniq[1:]) / 2
    # balanced accuracy of "bad above the cut"; "bad below" scores 1 minus it
    above = np.array([((t[is_bad] > m).mean() + (t[~is_bad] <= m).mean()) / 2 for m in mids])
    best = int(np.argmax(np.maximum(above, 1 - above)))
    upper = above[best] >= 1 - above[best]
    if max(above[best], 1 - above[best]) <= 0.5:
        return row  # no cut does better than chance: no rule to show
    row["threshold"] = float(back(mids[best]))
    row["accuracy"] = float(max(above[best], 1 - above[best]))
    row["rule"] = f"{param} {'>' if upper else '<'} {row['threshold']:.3g}"
    return row


def _natural_key(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def _categorical_row(param: str, values: pd.Series, bad: pd.Series) -> dict[str, Any]:
    from scipy import stats

    # natural order of the values (2, 4, 16), not their text order (16, 2, 4)
    order = sorted(values.map(str).unique(), key=_natural_key)
    table = (pd.crosstab(values.map(str), bad)
             .reindex(index=order, columns=[True, False], fill_value=0))
    n_bad, n_other = int(table[True].sum()), int(table[False].sum())
    share_bad, share_other = table[True] / n_bad, table[False] / n_other
    # the value set that maximises balanced accuracy: values more common among bad trials
    flagged = share_bad > share_other
    accuracy = 0.5 * (share_bad[flagged].sum() + share_other[~flagged].sum())
    row: dict[str, Any] = {
        "kind": "categorical", "median_bad": math.nan, "median_other": math.nan,
        "rule": f"{param} in {{{', '.join(table.index[flagged])}}}" if flagged.any() else "",
        "threshold": math.nan, "accuracy": float(accuracy),
        "bad_rate_by_value": ", ".join(f"{v}: {int(r[True])}/{int(r[True] + r[False])}"
                                       for v, r in table.iterrows()),
        "test": "", "p_value": 1.0,
    }
    if len(table) == 2:
        row["test"], row["p_value"] = "fisher", float(stats.fisher_exact(table.to_numpy())[1])
    elif len(table) > 2:
        row["test"] = "chi-square"
        row["p_value"] = float(stats.chi2_contingency(table.to_numpy()).pvalue)
    return row


def separating_parameters(df: pd.DataFrame, params: Sequence[str], *,
                          outcome: str = "stop_reason",
                          bad: Sequence[str] = FAILED_AS_ZERO) -> pd.DataFrame:
    """Which parameters tell the bad trials (``outcome`` in ``bad``) from the rest, any sweep.

    Numeric parameters (not bools) are compared on a log scale when every value is positive
    and they span more than 10x (an LR), else linearly: the median of each group (geometric
    on the log scale), a two-sided Mann-Whitney U p-value, and the best single threshold
    (``rule`` such as "lr > 0.0011", cut at the midpoint between neighbouring values, geometric
    on the log scale). Other parameters are categorical: ``bad_rate_by_value`` ("2: 0/8,
    16: 5/8"), a Fisher exact p-value for two values or chi-square for more, and the rule
    flagging the values more common among bad trials than among the others.

    ``accuracy`` is the rule's balanced accuracy (mean of the hit rates in the two groups):
    0.5 separates nothing, 1.0 separates perfectly, whatever the share of bad trials. Rows are
    sorted by accuracy, then p-value. Trials with no value for a parameter are left out of its
    row (``n_bad``, ``n_other`` say how many remain). With no bad trial, or no other trial,
    there is nothing to separate: an empty DataFrame with ``SEPARATION_COLUMNS``. A missing
    column raises BadInput.
    """
    absent = [c for c in (outcome, *params) if c not in df.columns]
    if absent:
        raise BadInput(f"results have no column(s) {', '.join(absent)}")
    is_bad = df[outcome].isin(list(bad))
    if not is_bad.any() or is_bad.all():
        return pd.DataFrame(columns=SEPARATION_COLUMNS)
    rows = []
    for param in params:
        ok = df[param].notna()
        values, flags = df.loc[ok, param], is_bad[ok]
        if flags.all() or not flags.any():
            continue  # this parameter is recorded for one group only: nothing to compare
        make = _numeric_row if _is_numeric(values) else _categorical_row
        row = make(param, values, flags)
        rows.append({"param": param, "n_bad": int(flags.sum()), "n_other": int((~flags).sum()),
                     **row})
    out = pd.DataFrame(rows, columns=SEPARATION_COLUMNS)
    return out.sort_values(["accuracy", "p_value"], ascending=[False, True],
                           kind="stable").reset_index(drop=True)
