"""Which effects the observed cells cannot tell apart, read off the cells themselves.

An effect (a *word*: a main effect, a 2FI, a three-factor interaction, ...) has a +-1 column
over the cells; two words whose columns are equal up to sign are aliased. In a regular fraction
this reproduces the design's alias structure; with missing cells or an extra corner run it says
what the data really hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from .fit import Fit, Term, term_name

__all__ = ["alias_map", "describe", "left_out_groups"]


def _words(k: int, min_order: int = 1) -> list[Term]:
    return [w for order in range(min_order, k + 1) for w in combinations(range(k), order)]


def _key(col: np.ndarray) -> bytes:
    return (col * col[0]).astype(np.int8).tobytes()


def _groups(cells: np.ndarray, k: int) -> dict[bytes, list[Term]]:
    groups: dict[bytes, list[Term]] = {}
    for word in _words(k):
        col = np.prod(cells[:, list(word)], axis=1)
        groups.setdefault(_key(col), []).append(word)
    return groups


def alias_map(fit: Fit) -> dict[str, list[str]]:
    """Each model term -> the other effects (any order) with the same column over the observed
    cells, by name; terms clear of everything are left out."""
    cells = np.array(fit.cells())
    out: dict[str, list[str]] = {}
    for words in _groups(cells, fit.k).values():
        for term in words:
            if term in fit.terms:
                others = [term_name(w, fit.factors) for w in words if w != term]
                if others:
                    out[fit.name(term)] = others
    return out


def left_out_groups(fit: Fit) -> list[list[str]]:
    """The effects the model leaves out that the cells can still estimate (what a lack-of-fit
    test looks at), as groups of aliased names (``["a:b:c", "d:e:f"]`` when ``abc = def``).
    Effects inside the span of the model terms are not listed (they cannot be told from
    them), nor are defining words (constant over the cells)."""
    cells = np.array(fit.cells())
    k = fit.k
    model = [np.ones(len(cells))] + [np.prod(cells[:, list(t)], axis=1) for t in fit.terms]
    basis = np.column_stack(model).astype(float)
    rank = np.linalg.matrix_rank(basis)
    out = []
    for words in _groups(cells, k).values():
        if any(w in fit.terms or len(w) <= 2 for w in words):
            continue
        col = np.prod(cells[:, list(words[0])], axis=1).astype(float)[:, None]
        if np.linalg.matrix_rank(np.hstack([basis, col])) > rank:
            out.append([term_name(w, fit.factors) for w in words])
    return out


def describe(groups: Sequence[Sequence[str]], limit: int = 6) -> str:
    """``"a:b:c = d:e:f; a:b:d"``, cut after ``limit`` groups with a count of the rest."""
    shown = [" = ".join(g) for g in groups[:limit]]
    more = len(groups) - limit
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
