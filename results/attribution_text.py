"""Plain-language verdicts and the markdown report of a factorial (collapse) sweep.

The numbers come from :mod:`camotune.results.attribution`; this module only words them. It
imports that module inside the report function, since ``attribution`` re-exports these two.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["attribution_report", "verdict"]

_FACTOR_LABELS = {
    "lr": "LR", "batch_size": "batch size", "accumulation_steps": "accumulation steps",
    "img_size": "image size", "use_ema": "EMA", "deep_supervision": "deep supervision",
    "ema_decay": "EMA decay", "warmup_steps": "warmup", "lr_scaling": "LR scaling",
}
_RESPONSE_LABELS = {
    "final_iou": "final IoU", "best_val_iou": "best validation IoU",
    "val_iou_ema": "IoU of the EMA weights", "val_iou_raw": "IoU of the raw weights",
}


def _factor(name: str) -> str:
    return _FACTOR_LABELS.get(name, name.replace("_", " "))


def _the(name: str) -> str:
    """A known setting reads with its article ("the LR"); a bare field name reads as is."""
    return f"the {_factor(name)}" if name in _FACTOR_LABELS else name


def _response(name: str) -> str:
    m = re.fullmatch(r"(?:val_)?iou_epoch(\d+)", name)
    return f"epoch-{m.group(1)} IoU" if m else _RESPONSE_LABELS.get(name, name.replace("_", " "))


def _is_bool(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_))


def _value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def _change(factor: str, first: Any, second: Any) -> str:
    """"Lowering the LR from 0.00025 to 0.0001", "Turning EMA on", ..."""
    label = _factor(factor)
    if _is_bool(first) and _is_bool(second):
        return f"Turning {label} {'on' if second else 'off'}"
    try:
        verb = "Raising" if float(second) > float(first) else "Lowering"
    except (TypeError, ValueError):
        return f"Changing {_the(factor)} from {_value(first)} to {_value(second)}"
    return f"{verb} {_the(factor)} from {_value(first)} to {_value(second)}"


def _at(factor: str, level: Any) -> str:
    """"with EMA on", "at batch size 16"."""
    if _is_bool(level):
        return f"with {_factor(factor)} {'on' if level else 'off'}"
    return f"at {_factor(factor)} {_value(level)}"


def _ci(row: pd.Series, alpha: float) -> str:
    if math.isnan(row["ci_low"]):
        return "no CI"
    return f"{100 * (1 - alpha):g}% CI {row['ci_low']:.3f} to {row['ci_high']:.3f}"


def _main_sentence(row: pd.Series, levels: Mapping[str, Sequence[Any]], resp: str,
                   alpha: float) -> str:
    term = row["term"]
    change = (_change(term, *levels[term]) if term in levels
              else f"Moving {_factor(term)} from its first to its second level")
    return f"{change} changes {resp} by {row['effect']:+.3f} ({_ci(row, alpha)})."


def _interaction_sentence(row: pd.Series, effects: pd.DataFrame,
                          levels: Mapping[str, Sequence[Any]], resp: str, alpha: float) -> str:
    a, b = row["term"].split(":")
    main = effects.set_index("term")["effect"]
    # describe the factor with the larger main effect, conditioned on the other
    if abs(main.get(b, 0.0)) > abs(main.get(a, 0.0)):
        a, b = b, a
    text = (f"{_factor(a)} and {_factor(b)} interact ({_factor(a)} x {_factor(b)} "
            f"{row['effect']:+.3f}, {_ci(row, alpha)})")
    if a in levels and b in levels and not math.isnan(main.get(a, math.nan)):
        lo, hi = main[a] - row["effect"], main[a] + row["effect"]
        change = _change(a, *levels[a])
        text += (f": {change[0].lower()}{change[1:]} changes "
                 f"{resp} by {hi:+.3f} {_at(b, levels[b][1])} but by {lo:+.3f} "
                 f"{_at(b, levels[b][0])}")
    return text + "."


def verdict(effects: pd.DataFrame, response: str, *, top: int = 3) -> str:
    """A short paragraph on ``factorial_effects(...)``'s table for ``response``.

    Cites the ``top`` largest significant terms with their CIs (an interaction as the effect of
    one factor at each level of the other), then says what the data cannot decide: terms whose
    CI includes 0, aliased terms, missing trials, too few repeats. With no residual degrees of
    freedom it says that no effect can be judged and lists the largest estimates without CIs.
    Reads ``effects.attrs["attribution"]``; without it the wording is more generic.
    """
    info = effects.attrs.get("attribution", {})
    levels = info.get("levels", {})
    alpha = info.get("alpha", 0.05)
    resp = _response(response)
    fitted = effects[effects["effect"].notna()]
    mains = fitted[~fitted["term"].str.contains(":")]
    inters = fitted[fitted["term"].str.contains(":")]
    out = []
    if info:
        lo, hi = info["repeats_min"], info["repeats_max"]
        reps = (f"{lo} to {hi} trials each" if lo != hi
                else "one trial each" if lo == 1 else f"{lo} trials each (repeats over seeds)")
        out.append(f"{resp[0].upper()}{resp[1:]}: {info['n_trials']} trials at "
                   f"{info['n_points']} design points, {reps}.")
        if info["n_zeroed"]:
            out.append(f"{info['n_zeroed']} trial(s) that diverged or collapsed before recording "
                       f"{resp} count as IoU 0.")
        if info["n_dropped"]:
            out.append(f"{info['n_dropped']} trial(s) without a value are left out.")

    def cite(row: pd.Series) -> str:
        if ":" in row["term"]:
            return _interaction_sentence(row, effects, levels, resp, alpha)
        return _main_sentence(row, levels, resp, alpha)

    no_dof = info.get("dof", 1) == 0 or (len(fitted) and fitted["ci_low"].isna().all())
    if no_dof:
        out.append("No residual degrees of freedom are left (as many fitted terms as trials), "
                   "so there are no confidence intervals: the data cannot decide "
                   "which effect is real. Repeat the design over more seeds.")
        largest = ", ".join(f"{r.term} {r.effect:+.3f}" for r in fitted.head(top).itertuples())
        if largest:
            out.append(f"Largest estimates, without CIs: {largest}.")
    else:
        sig = fitted[fitted["significant"]]
        if sig.empty:
            largest = "; ".join(f"{r['term']} {r['effect']:+.3f} ({_ci(r, alpha)})"
                                for _, r in fitted.head(top).iterrows())
            out.append(f"No CI excludes 0: the data cannot show that any setting changes {resp} "
                       f"(largest estimates: {largest}).")
        out += [cite(row) for _, row in sig.head(top).iterrows()]
        if len(sig) > top:
            out.append(f"{len(sig) - top} further term(s) are significant too (see the table).")
        undecided = mains[~mains["significant"]]
        if not undecided.empty and not sig.empty:
            listed = "; ".join(f"{_factor(r['term'])} {r['effect']:+.3f} ({_ci(r, alpha)})"
                               for _, r in undecided.iterrows())
            out.append(f"The data cannot decide whether these matter, their CIs include 0: "
                       f"{listed}.")
        quiet = inters[~inters["significant"]]
        if len(quiet) and not sig.empty:
            other = "other " if len(quiet) < len(inters) else ""
            out.append(f"None of the {other}{len(quiet)} two-factor interactions is "
                       f"distinguishable from 0.")
        if info.get("repeats_max", 2) < 2:
            out.append("With one trial per design point, the CIs assume the terms left out of "
                       "the model (three-factor and higher interactions) are 0.")
    constant = effects.loc[effects["aliased_with"] == "intercept", "term"].tolist()
    if constant:
        out.append(f"{', '.join(constant)} did not vary in these trials: no effect can be "
                   "estimated for it.")
    chains = [f"{r['term']} + {r['aliased_with'].replace(', ', ' + ')}"
              for _, r in fitted.iterrows() if r["aliased_with"]]
    if chains:
        out.append("This fraction cannot separate aliased terms; each estimate is the sum of "
                   "its chain: " + "; ".join(chains).replace("+ -", "- ") + ".")
    return " ".join(out)


def _num(x: float, fmt: str = "{:+.3f}") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _p(x: float) -> str:
    return "n/a" if math.isnan(x) else ("<0.001" if x < 0.001 else f"{x:.3f}")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _gap_section(gap: pd.DataFrame, alpha: float) -> list[str]:
    rows = [[r.factor, r.level, r.n, _num(r.mean_ema, "{:.3f}"), _num(r.mean_raw, "{:.3f}"),
             _num(r.mean_gap), f"{_num(r.ci_low, '{:.3f}')} to {_num(r.ci_high, '{:.3f}')}"]
            for r in gap.itertuples()]
    table = _md_table(["factor", "level", "trials", "EMA IoU", "raw IoU", "gap",
                       f"{100 * (1 - alpha):g}% CI"], rows)
    overall = gap.iloc[0]
    text = (f"On the {overall['n']} trials with EMA on, the EMA weights score "
            f"{overall['mean_gap']:+.3f} IoU against the raw weights at the same epoch")
    no_gap = False
    if math.isnan(overall["ci_low"]):
        text += " (too few trials for a CI)."
    elif overall["ci_high"] < 0:
        text += (f" ({_ci(overall, alpha)}): the EMA's lag costs IoU, so part of the apparent "
                 "collapse is the average still holding early weights, not the training.")
    elif overall["ci_low"] > 0:
        text += f" ({_ci(overall, alpha)}): the EMA weights do better; its lag is no cause."
    else:
        text += (f" ({_ci(overall, alpha)}): no gap distinguishable from 0 on average.")
        no_gap = True
    ema_spread = gap["mean_ema"].max() - gap["mean_ema"].min()
    raw_spread = gap["mean_raw"].max() - gap["mean_raw"].min()
    if ema_spread < 0.01 < raw_spread:
        # An average over levels can hide an EMA that never left its starting weights.
        text += (f" But the EMA weights score about {gap['mean_ema'].mean():.3f} at every level "
                 f"of every factor while the raw weights range over {raw_spread:.3f}: the "
                 "average hardly moved from its starting weights (a decay too close to 1 for "
                 "the number of optimizer steps), so validating it measures the "
                 "initialisation, not the training.")
    elif no_gap:
        text += " The EMA's lag does not explain the collapse."
    return ["### EMA weights against raw weights", "", table, "", text, ""]


def attribution_report(df: pd.DataFrame, levels: Mapping[str, Sequence[Any]],
                       responses: Sequence[str] = ("iou_epoch3", "final_iou"), *,
                       alpha: float = 0.05, missing: str = "zero", top: int = 3) -> str:
    """Markdown: the design, a table and a verdict per response, the EMA gap, separators.

    The EMA section appears when the table has ``val_iou_ema`` and ``val_iou_raw``; the
    separating-parameters section is always there (it says so when no trial collapsed or
    diverged). A response column that is missing raises BadInput, as in ``factorial_effects``.
    """
    from camotune.results.attribution import ema_gap, factorial_effects, separating_parameters

    out = ["## Collapse attribution", "",
           "Two-level factorial design. First level (coded -1): the setting of the run that "
           "worked; second level (+1): the setting of the run that collapsed. An effect is the "
           "mean response at the second level minus the mean at the first.", "",
           _md_table(["factor", "first (-1)", "second (+1)"],
                     [[f, _value(a), _value(b)] for f, (a, b) in levels.items()]), ""]
    counts = (df["stop_reason"].value_counts() if "stop_reason" in df.columns
              else pd.Series(dtype=int))
    reasons = ", ".join(f"{k} {v}" for k, v in counts.items())
    out += [f"{len(df)} trials" + (f"; stop reasons: {reasons}." if reasons else "."), ""]
    pct = f"{100 * (1 - alpha):g}% CI"
    for response in responses:
        eff = factorial_effects(df, levels, response, alpha=alpha, missing=missing)
        rows = [[r.term, _num(r.effect), f"{_num(r.ci_low, '{:.3f}')} to {_num(r.ci_high, '{:.3f}')}",
                 _p(r.p_value), "yes" if r.significant else "no", r.aliased_with]
                for r in eff.itertuples()]
        out += [f"### {_response(response)} (`{response}`)", "",
                _md_table(["term", "effect", pct, "p", "significant", "aliased with"], rows), "",
                verdict(eff, response, top=top), ""]
    if {"val_iou_ema", "val_iou_raw"} <= set(df.columns):
        gap = ema_gap(df, levels, alpha=alpha)
        if len(gap):
            out += _gap_section(gap, alpha)
    out += ["### What separates collapsed and diverged trials", ""]
    sep = separating_parameters(df, list(levels)) if "stop_reason" in df.columns else None
    if sep is None:
        out += ["The results have no `stop_reason` column.", ""]
    elif sep.empty:
        out += ["No trial collapsed or diverged (or every trial did): nothing to separate.", ""]
    else:
        rows = [[r.param, r.rule or "-", f"{r.accuracy:.2f}", _p(r.p_value), r.test,
                 r.bad_rate_by_value or f"median {r.median_bad:.3g} vs {r.median_other:.3g}"]
                for r in sep.itertuples()]
        out += [_md_table(["parameter", "best rule", "balanced accuracy", "p", "test",
                           "bad trials / medians (bad vs other)"], rows), ""]
    return "\n".join(out)
