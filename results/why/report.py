"""The `camotune why` report: every analysis of every response, as a JSON-ready dict and as
plain text.

``why_report`` takes the trial table (one row per run x seed: the coded factor columns, the
seed and the response columns; NaN where a trial has no value) and returns
``{factors, design, responses: {name: {...}}}``; each response holds ``gap``, ``shapley``,
``undo``, ``apply``, ``terms``, ``lack_of_fit``, ``verdict`` (text) and ``verdict_detail``.
All floats are JSON-safe: NaN and infinities become None (``json.dumps(..., allow_nan=False)``
works on the result).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from camotune.errors import BadInput

from .contrasts import apply_effects, gap, undo_effects
from .fit import fit_response
from .lack_of_fit import lack_of_fit
from .shapley import INTERACTIONS_NOTE, shapley_shares
from .terms import term_table
from .verdict import verdict

__all__ = ["analyse_response", "json_safe", "render_text", "why_report"]


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars made Python, tuples made lists and NaN/inf made None."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def analyse_response(frame: pd.DataFrame, factors: Sequence[str], response: str, *,
                     seed_column: str | None = "seed", alpha: float = 0.05) -> dict[str, Any]:
    """Everything about one response (see the module docstring); raw floats, NaN kept."""
    fit = fit_response(frame, factors, response, seed_column=seed_column, alpha=alpha)
    the_gap = gap(fit)
    terms = term_table(fit)
    lof = lack_of_fit(fit)
    detail = verdict(fit, the_gap, terms, lof)
    return {
        "n_trials": len(fit.data), "n_missing": fit.n_missing, "seeds": fit.seeds,
        "gap": the_gap.to_dict(),
        "shapley": shapley_shares(fit), "shapley_note": INTERACTIONS_NOTE,
        "undo": undo_effects(fit, the_gap), "apply": apply_effects(fit, the_gap),
        "terms": terms, "lack_of_fit": lof,
        "residual_dof": float(fit.results.df_resid),
        "verdict": detail["text"], "verdict_detail": detail,
    }


def why_report(frame: pd.DataFrame, factors: Sequence[Mapping[str, Any]] | Sequence[str],
               responses: Sequence[str], *, design: Mapping[str, Any] | None = None,
               seed_column: str | None = "seed", alpha: float = 0.05) -> dict[str, Any]:
    """The whole report, JSON-safe. ``factors`` are names or ``{name, good, bad}`` dicts (as
    `PairDesign.summary` gives); ``design`` is passed through. A response with fewer than two
    values gets ``{"error": ...}`` instead of an analysis."""
    specs = [{"name": f} if isinstance(f, str) else dict(f) for f in factors]
    names = [s["name"] for s in specs]
    if not responses:
        raise BadInput("why: no response to analyse")
    out: dict[str, Any] = {"factors": specs, "design": dict(design or {}), "responses": {}}
    for response in responses:
        try:
            out["responses"][response] = analyse_response(
                frame, names, response, seed_column=seed_column, alpha=alpha)
        except BadInput as exc:
            if "fewer than two trials" not in str(exc):
                raise
            out["responses"][response] = {"error": str(exc)}
    return json_safe(out)


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def _ci(ci: Sequence[Any]) -> str:
    return f"[{_f(ci[0])}, {_f(ci[1])}]"


def _section(name: str, r: Mapping[str, Any]) -> list[str]:
    if "error" in r:
        return [f"== {name} ==", r["error"], ""]
    g = r["gap"]
    lines = [f"== {name} ({r['n_trials']} trials, {r['n_missing']} missing) ==",
             f"gap good - bad: observed {_f(g['observed'])} {_ci(g['observed_ci'])} over "
             f"{g['n_seeds']} seed(s); fitted {_f(g['fitted'])} {_ci(g['fitted_ci'])}",
             "undo from the bad run (value = reverted - bad; share of the gap):"]
    for e in r["undo"]:
        src = "observed" if e["observed"] else "fitted"
        lines.append(f"  revert {{{', '.join(e['set'])}}}: {_f(e['value'])} {_ci(e['ci'])} "
                     f"{src}, {_f(e['recovered_fraction'])} of the gap")
    lines.append("apply to the good run (value = changed - good; share of bad - good):")
    for e in r["apply"]:
        src = "observed" if e["observed"] else "fitted"
        lines.append(f"  apply {{{', '.join(e['set'])}}}: {_f(e['value'])} {_ci(e['ci'])} "
                     f"{src}, {_f(e['gap_fraction'])} of the damage")
    lines.append("Shapley split of the fitted gap:")
    for factor, s in r["shapley"].items():
        lines.append(f"  {factor}: {_f(s['value'])} {_ci(s['ci'])}")
    lines.append("  " + r["shapley_note"])
    lines.append("terms (effect = bad level - good level; p, Holm p):")
    for t in r["terms"]:
        if t.get("dropped"):
            lines.append(f"  {t['term']}: aliased with {', '.join(t['aliased_with'])}")
            continue
        mark = " *" if t["significant"] else ""
        lines.append(f"  {t['term']}: {_f(t['effect'])} {_ci(t['ci'])} p {_f(t['p'])} "
                     f"Holm {_f(t['p_adjusted'])}{mark}")
    lof = r["lack_of_fit"]
    lines.append(f"lack of fit: F {_f(lof['F'])}, p {_f(lof['p'])}, dof {lof['dof']}"
                 + (f" ({lof['reason']})" if lof["reason"] else ""))
    lines += ["verdict: " + r["verdict"], ""]
    return lines


def render_text(report: Mapping[str, Any]) -> str:
    """The report as plain text, one section per response (``*`` marks Holm-significant)."""
    lines = []
    for f in report["factors"]:
        if "good" in f:
            lines.append(f"factor {f['name']}: good {f['good']!r}, bad {f['bad']!r}")
    d = report.get("design") or {}
    if d:
        lines.append(f"design: {d.get('type', '?')}, {d.get('runs', '?')} runs x "
                     f"{len(d.get('seeds', []))} seed(s), resolution "
                     f"{d.get('resolution') or 'full'}")
    lines.append("")
    for name, r in report["responses"].items():
        lines += _section(name, r)
    return "\n".join(lines)
