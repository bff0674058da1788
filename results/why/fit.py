"""The model behind `camotune why`: OLS on the coded factors of a good/bad design.

Each factor column is coded -1 at the good run's level and +1 at the bad run's. The model
(statsmodels' formula API) has an intercept, every main effect, every two-factor interaction
(2FI) and, when the data hold more than one seed, the seed as a block (``C(seed)``, treatment
coded). A term whose column the data cannot tell from earlier terms (aliased in a fraction, or
made so by missing trials) is dropped and reported with the terms it is aliased with; earlier
means lower order first, so a 2FI gives way to a main effect, never the reverse.

Rows whose response is missing (NaN) are dropped for that response only; nothing is filled in.
Fitted cell values are for the average seed block.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from statsmodels.regression.linear_model import RegressionResults

from camotune.errors import BadInput

__all__ = ["Fit", "Point", "Term", "fit_response", "term_name"]

Point = tuple[int, ...]  # one cell: each factor's code (-1 good, +1 bad), in factor order
Term = tuple[int, ...]   # factor indices: (i,) a main effect, (i, j) a 2FI


def _var(i: int) -> str:
    return f"x{i}"


def term_name(term: Term, factors: Sequence[str]) -> str:
    """``"lr"`` or ``"batch_size:lr"``: the factor names joined by ``:`` in factor order."""
    return ":".join(factors[i] for i in term)


@dataclass
class Fit:
    """One response fitted. ``data`` holds the rows used (``x0..``, ``seed``, ``cell``, ``y``);
    ``results`` the statsmodels OLS results; ``dropped`` each term left out for aliasing ->
    the kept terms it equals (a ``(sign, term)`` list; a bare intercept is ``()``)."""

    response: str
    factors: list[str]
    data: pd.DataFrame
    n_missing: int
    seeds: list
    terms: list[Term]
    dropped: dict[Term, list[tuple[int, Term]]]
    results: RegressionResults
    alpha: float
    missing_cells: list[Point] = field(default_factory=list)

    @property
    def k(self) -> int:
        return len(self.factors)

    def name(self, term: Term) -> str:
        return term_name(term, self.factors)

    def param_terms(self) -> dict[str, Term]:
        """Model parameter name -> term, for the factor terms only."""
        out = {}
        for name in self.results.model.exog_names:
            if name == "Intercept" or name.startswith("C(seed)"):
                continue
            out[name] = tuple(sorted(int(v[1:]) for v in name.split(":")))
        return out

    def row(self, point: Point) -> np.ndarray:
        """The model row of a cell at the average seed block: ``row(p) @ params`` is the fitted
        response there."""
        names = self.results.model.exog_names
        n_blocks = len(self.seeds)
        out = np.zeros(len(names))
        for j, name in enumerate(names):
            if name == "Intercept":
                out[j] = 1.0
            elif name.startswith("C(seed)"):
                out[j] = 1.0 / n_blocks
            else:
                value = 1.0
                for v in name.split(":"):
                    value *= point[int(v[1:])]
                out[j] = value
        return out

    def cells(self) -> list[Point]:
        """The distinct cells with at least one value, in first-seen order."""
        return list(dict.fromkeys(self.data["point"]))


def _columns(frame: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    missing = [f for f in factors if f not in frame.columns]
    if missing:
        raise BadInput(f"why: no column for factor(s) {', '.join(missing)}")
    coded = frame[list(factors)]
    if coded.isna().to_numpy().any() or not coded.isin([-1, 1]).to_numpy().all():
        raise BadInput("why: factor columns must hold -1 (good level) or +1 (bad level) only")
    return coded.astype(int)


def _design_terms(k: int) -> list[Term]:
    return [(i,) for i in range(k)] + list(combinations(range(k), 2))


def _term_column(coded: np.ndarray, term: Term) -> np.ndarray:
    return np.prod(coded[:, list(term)], axis=1).astype(float)


def _estimable(coded: np.ndarray, blocks: np.ndarray,
               terms: list[Term]) -> tuple[list[Term], dict[Term, list[tuple[int, Term]]]]:
    """Keep each term whose column adds rank to those before it (intercept and blocks first)."""
    base = np.column_stack([np.ones(len(coded)), blocks]) if blocks.size else np.ones((len(coded), 1))
    kept: list[Term] = []
    cols = [base]
    rank = np.linalg.matrix_rank(base)
    dropped: dict[Term, list[tuple[int, Term]]] = {}
    for term in terms:
        col = _term_column(coded, term)[:, None]
        trial = np.hstack([*cols, col])
        new_rank = np.linalg.matrix_rank(trial)
        if new_rank > rank:
            kept.append(term)
            cols.append(col)
            rank = new_rank
            continue
        known = np.hstack(cols)
        coef = np.linalg.lstsq(known, col[:, 0], rcond=None)[0]
        tail = coef[base.shape[1]:]
        aliases = [(1 if c > 0 else -1, kept[i]) for i, c in enumerate(tail) if abs(c) > 1e-6]
        if abs(coef[0]) > 1e-6 and not aliases:
            aliases = [(1 if coef[0] > 0 else -1, ())]
        dropped[term] = aliases
    return kept, dropped


def fit_response(frame: pd.DataFrame, factors: Sequence[str], response: str, *,
                 seed_column: str | None = "seed", alpha: float = 0.05) -> Fit:
    """Fit ``response`` on the coded ``factors`` of ``frame`` (one row per run x seed).

    ``seed_column`` None means one block. Rows with a missing response are dropped (counted
    in ``n_missing``); cells that lose every row are listed in ``missing_cells``. Fewer than
    two rows with a value raise :class:`BadInput`.
    """
    if response not in frame.columns:
        raise BadInput(f"why: no column {response!r} in the trial table")
    if not 0 < alpha < 1:
        raise BadInput(f"why: alpha must lie strictly between 0 and 1 (got {alpha!r})")
    coded_all = _columns(frame, factors)
    y = pd.to_numeric(frame[response], errors="coerce").astype(float)
    seeds_all = frame[seed_column] if seed_column else pd.Series(0, index=frame.index)
    keep = y.notna().to_numpy()
    if keep.sum() < 2:
        raise BadInput(f"why: {response}: fewer than two trials have a value")
    k = len(factors)
    data = coded_all[keep].copy()
    data.columns = [_var(i) for i in range(k)]
    data["seed"] = seeds_all[keep].to_numpy()
    data["y"] = y[keep].to_numpy()
    data["point"] = [tuple(int(v) for v in row) for row in coded_all[keep].to_numpy()]
    data["cell"] = ["".join("+" if v > 0 else "-" for v in p) for p in data["point"]]
    data = data.reset_index(drop=True)
    all_cells = dict.fromkeys(tuple(int(v) for v in row) for row in coded_all.to_numpy())
    seeds = list(dict.fromkeys(data["seed"]))
    blocks = (pd.get_dummies(data["seed"].astype(str), drop_first=True).to_numpy(float)
              if len(seeds) > 1 else np.empty((len(data), 0)))
    terms, dropped = _estimable(data[[_var(i) for i in range(k)]].to_numpy(), blocks,
                                _design_terms(k))
    rhs = [":".join(_var(i) for i in t) for t in terms] + (["C(seed)"] if len(seeds) > 1 else [])
    formula = "y ~ " + (" + ".join(rhs) if rhs else "1")
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        results = smf.ols(formula, data=data).fit()
    seen = set(data["point"])
    return Fit(response, list(factors), data, int((~keep).sum()), seeds, terms, dropped,
               results, alpha, [c for c in all_cells if c not in seen])
