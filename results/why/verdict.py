"""The verdict: the smallest set of changes whose revert, by its CI, recovers the gap.

A set ``S`` of factors *recovers the gap* when the CI of the fitted contrast ``y(bad with S
reverted) - y(bad) - 0.9 (y(good) - y(bad))`` lies wholly on the gap's side of 0: the
improvement is at least 90% of the gap even allowing for the uncertainty in both. The fitted
contrast is used for the search because its error estimate pools every trial (seeds give few
degrees of freedom: with two seeds an observed t interval has one). Sets are tried by size:
singles, then pairs, then triples, ...; the first size with a passing set gives the answer, and
of several passing sets the one with the widest margin. The answer is then checked against the
cell means: where the reverted cell was run, the observed improvement over the observed gap
(paired over seeds) is reported, and the set counts as *confirmed* when it is at least 90%.

Whether there is a gap at all is judged on the fitted gap's CI while the model shows no
significant lack of fit (its residual variance pools every trial), else on the observed CI
over seeds (see `_gap_reference`).

A set of two or more acts *jointly* when an interaction among its factors is significant after
Holm's correction (the changes matter together, not one by one), *separately* when none is
(their single effects add up); when such an interaction was aliased away the data cannot say.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

from .aliases import describe
from .contrasts import Estimate, Gap, cell_means, corner, fitted, moved, observed
from .fit import Fit

__all__ = ["SHORT_RUNS", "THRESHOLD", "find_revert_set", "verdict"]

THRESHOLD = 0.9
SHORT_RUNS = ("Synthetic or shortened runs are not evidence about the original full-length "
              "runs: what holds here holds for these runs and must be confirmed at full length "
              "on the real data.")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3g}"


def _ci(est: Estimate) -> str:
    return f"[{_fmt(est.low)}, {_fmt(est.high)}]"


def _recovery(fit: Fit, subset: tuple[int, ...]) -> Estimate:
    good, bad = corner(fit, -1), corner(fit, 1)
    weights: dict = {}
    for point, w in ((moved(bad, subset), 1.0), (bad, -(1 - THRESHOLD)), (good, -THRESHOLD)):
        weights[point] = weights.get(point, 0.0) + w
    return fitted(fit, {p: w for p, w in weights.items() if abs(w) > 1e-12})


def _confirmation(fit: Fit, subset: tuple[int, ...], the_gap: Gap) -> float | None:
    """Observed improvement / observed gap for the reverted cell; None if not run."""
    if the_gap.observed is None or abs(the_gap.observed.value) < 1e-12:
        return None
    bad = corner(fit, 1)
    est = observed(fit, {moved(bad, subset): 1.0, bad: -1.0}, cell_means(fit))
    return None if est is None else est.value / the_gap.observed.value


def find_revert_set(fit: Fit, direction: float) -> dict[str, Any] | None:
    """The smallest passing set (see the module docstring) as ``{set, indices, margin,
    others}``, or None when not even reverting everything passes. ``direction`` is the sign
    of the gap."""
    for size in range(1, fit.k + 1):
        passing = []
        for subset in combinations(range(fit.k), size):
            est = _recovery(fit, subset)
            bound = est.low if direction > 0 else -est.high
            if math.isfinite(bound) and bound > 0:
                passing.append((bound, subset))
        if passing:
            passing.sort(key=lambda t: -t[0])
            bound, subset = passing[0]
            return {"set": [fit.factors[i] for i in subset], "indices": list(subset),
                    "margin": bound,
                    "others": [[fit.factors[i] for i in s] for _, s in passing[1:]]}
    return None


def _acting(fit: Fit, indices: list[int], terms: list[dict[str, Any]]) -> tuple[bool | None, str]:
    if len(indices) == 1:
        return None, "It acts alone."
    by_name = {row["term"]: row for row in terms}
    pairs = [fit.name(p) for p in combinations(indices, 2)]
    rows = [by_name[p] for p in pairs if p in by_name]
    if any(r.get("dropped") for r in rows):
        hidden = ", ".join(r["term"] for r in rows if r.get("dropped"))
        return None, (f"Whether they act jointly cannot be told: {hidden} is aliased "
                      "with another term.")
    sig = [r for r in rows if r["significant"]]
    if sig:
        named = ", ".join(f"{r['term']} (effect {_fmt(r['effect'])}, Holm p "
                          f"{_fmt(r['p_adjusted'])})" for r in sig)
        return True, f"They act jointly: the interaction {named} is significant after Holm."
    return False, ("They act separately: no interaction among them is significant after Holm, "
                   "so their single effects add up.")


def _alias_text(row: dict[str, Any]) -> str:
    partners = row["aliased_with"]
    if len(partners) == 1:
        return f"{row['term']} = {partners[0]}"
    return (f"{row['term']} is a combination of " + ", ".join(p.lstrip("-") for p in partners)
            + " (missing trials)")


def _unknowns(fit: Fit, terms: list[dict[str, Any]], lof: dict[str, Any]) -> list[str]:
    out = []
    dropped = [r for r in terms if r.get("dropped")]
    if dropped:
        out.append("aliased terms: " + "; ".join(_alias_text(r) for r in dropped))
    clouded = [f"{r['term']} = {' = '.join(r['aliased_with'][:2])}" for r in terms
               if not r.get("dropped") and r["aliased_with"]]
    if clouded:
        out.append("each estimate includes the higher-order effects aliased with it ("
                   + "; ".join(clouded[:4]) + ("; ..." if len(clouded) > 4 else "") + ")")
    if fit.missing_cells:
        out.append(f"{len(fit.missing_cells)} design run(s) have no value for {fit.response} "
                   "(missing, not substituted); effects there are fitted")
    if fit.n_missing:
        out.append(f"{fit.n_missing} trial(s) have no value for {fit.response}")
    if fit.results.df_resid <= 0:
        out.append("no residual degrees of freedom (as many model terms as trials): "
                   "fitted effects have no CI")
    if len(fit.seeds) < 2:
        out.append("one seed only: observed effects have no CI, and seed-to-seed spread is unknown")
    if lof["reason"] and not lof.get("nothing_left_out"):
        out.append("lack of fit: " + lof["reason"])
    elif math.isfinite(lof["p"]) and lof["p"] < fit.alpha:
        groups = describe(lof["left_out"]) or "higher-order effects"
        out.append(f"lack of fit (F {_fmt(lof['F'])}, p {_fmt(lof['p'])}): left-out effects "
                   f"matter ({groups}), so fitted values of cells not run may be off; "
                   "running the complementary fraction would separate them")
    return out


def _gap_reference(the_gap: Gap, lof: dict[str, Any], alpha: float) -> tuple[Estimate, str]:
    """The interval that decides whether there is a gap, and a sentence saying which.

    The fitted gap's CI uses the residual variance pooled over every trial; with few seeds the
    observed one has almost no degrees of freedom (two seeds: one, a t quantile of 12.7). The
    fitted interval is used while the model fits (no significant lack of fit), else the
    observed one, which assumes nothing about the model."""
    fitted, obs = the_gap.fitted, the_gap.observed
    misfit = math.isfinite(lof.get("p", math.nan)) and lof["p"] < alpha
    have_obs = obs is not None and math.isfinite(obs.low)
    if math.isfinite(fitted.low) and not (misfit and have_obs):
        return fitted, ("The gap is judged on the fitted CI (residual variance pooled over "
                        "every trial; the model shows no significant lack of fit).")
    if have_obs:
        why = "the model shows lack of fit" if misfit else "the fitted gap has no CI"
        return obs, f"The gap is judged on the observed CI over seeds ({why})."
    return fitted, "The gap is judged on the fitted model."


def verdict(fit: Fit, the_gap: Gap, terms: list[dict[str, Any]],
            lof: dict[str, Any]) -> dict[str, Any]:
    """``{text, set, joint, observed_share, confirmed, cannot_decide}``: the plain-text
    verdict and its parts (``set`` None when there is no gap or no set passes)."""
    obs = the_gap.observed
    first = f"{fit.response}: the gap (good - bad) is "
    if obs is not None:
        first += f"{_fmt(obs.value)} observed over {obs.n_seeds} seed(s), CI {_ci(obs)}; "
    lines = [first + f"{_fmt(the_gap.fitted.value)} fitted, CI {_ci(the_gap.fitted)}."]
    ref, basis = _gap_reference(the_gap, lof, fit.alpha)
    lines.append(basis)
    unknowns = _unknowns(fit, terms, lof)
    out: dict[str, Any] = {"set": None, "joint": None, "observed_share": None,
                           "confirmed": None}
    if not math.isfinite(ref.low):
        lines.append("The gap has no CI, so no verdict can be drawn.")
    elif not (ref.low > 0 or ref.high < 0):
        lines.append("The data do not show a gap between the good and the bad run (its CI "
                     "includes 0), so there is nothing to attribute.")
    else:
        found = find_revert_set(fit, 1.0 if ref.value > 0 else -1.0)
        if found is None:
            lines.append(f"No set of reverts, not even all of them, recovers {THRESHOLD:.0%} of "
                         "the gap by its CI: the noise is too large for a verdict.")
        else:
            names = ", ".join(found["set"])
            smaller = "" if len(found["set"]) == 1 else " No smaller set does."
            lines.append(f"Reverting {{{names}}} recovers at least {THRESHOLD:.0%} of the gap "
                         f"by its CI on the fitted model.{smaller}")
            share = _confirmation(fit, tuple(found["indices"]), the_gap)
            if share is None:
                lines.append("That cell was not run (or a corner has no value): the answer "
                             "rests on the model alone.")
            else:
                word = "confirm it" if share >= THRESHOLD else "do not confirm it"
                lines.append(f"The observed cell means {word}: reverting these recovers "
                             f"{share:.0%} of the observed gap.")
            joint, text = _acting(fit, found["indices"], terms)
            lines.append(text)
            if found["others"]:
                lines.append("Other sets of that size also do: " + "; ".join(
                    "{" + ", ".join(s) + "}" for s in found["others"][:4]) + ".")
            out.update(set=found["set"], joint=joint, observed_share=share,
                       confirmed=None if share is None else share >= THRESHOLD)
    if unknowns:
        lines.append("The data cannot decide: " + "; ".join(unknowns) + ".")
    lines.append(SHORT_RUNS)
    out.update(text=" ".join(lines), cannot_decide=unknowns)
    return out
