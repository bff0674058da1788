"""``Design``: a two-level factorial design, optionally a regular fraction, with repeats.

``k`` factors (the keys of ``levels``, in order) are named A, B, C, ... (I is skipped, as in
the literature). A full factorial has ``2^k`` runs. ``fraction = 2^p`` keeps ``2^(k-p)`` runs:
the first ``k-p`` factors form a full factorial in standard (Yates) order, A changing fastest,
and each of the last ``p`` factors is set to the product of a generator word of the others.
The generators are the minimum-aberration ones of the standard tables (Box, Hunter & Hunter;
Montgomery, *Design and Analysis of Experiments*, table 8.14), all with positive sign. Only
fractions of resolution III or more are offered (k = 2..8 fractional; full factorials for any
k up to 12); anything else raises :class:`BadInput`.

Coding: the first level listed is -1, the second +1. The *resolution* R is the length of the
shortest word of the defining relation: with R >= V, main effects and two-factor interactions
(2FIs) are all estimable; with R = IV, main effects are clear of 2FIs but 2FIs are aliased with
each other; with R = III, main effects are aliased with 2FIs. :meth:`Design.aliases` says which
effects cannot be separated from a given one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from camotune.errors import BadInput, clip, excerpt

from .dist import is_scalar, same_value

LETTERS = "ABCDEFGHJKLMNOPQRSTUVWXYZ"
MAX_FULL_FACTORS = 12

# (k, p) -> generator words for factors k-p+1 .. k, over the letters of the first k-p factors.
GENERATORS: dict[tuple[int, int], tuple[str, ...]] = {
    (3, 1): ("AB",),                                  # III   C = AB
    (4, 1): ("ABC",),                                 # IV    D = ABC
    (5, 1): ("ABCD",),                                # V     E = ABCD
    (5, 2): ("AB", "AC"),                             # III
    (6, 1): ("ABCDE",),                               # VI    F = ABCDE
    (6, 2): ("ABC", "BCD"),                           # IV    E = ABC, F = BCD
    (6, 3): ("AB", "AC", "BC"),                       # III
    (7, 1): ("ABCDEF",),                              # VII
    (7, 2): ("ABCD", "ABDE"),                         # IV
    (7, 3): ("ABC", "BCD", "ACD"),                    # IV
    (7, 4): ("AB", "AC", "BC", "ABC"),                # III   saturated
    (8, 1): ("ABCDEFG",),                             # VIII
    (8, 2): ("ABCD", "ABEF"),                         # V
    (8, 3): ("ABC", "ABD", "BCDE"),                   # IV
    (8, 4): ("BCD", "ACD", "ABC", "ABD"),             # IV
}


def _mask(word: str) -> int:
    return sum(1 << LETTERS.index(ch) for ch in word)


def _word(mask: int) -> str:
    return "".join(ch for i, ch in enumerate(LETTERS) if mask >> i & 1)


def supported_fractions(k: int) -> list[int]:
    """The ``fraction`` values offered for ``k`` factors (1 always, if ``k`` is allowed)."""
    return [1] + [2 ** p for (kk, p) in sorted(GENERATORS) if kk == k]


@dataclass(frozen=True)
class Design:
    """A two-level factorial over ``levels`` (field -> (first level, second level)).

    ``fraction`` is 1 (full), 2, 4, 8, ...: the design has ``2^k / fraction`` runs.
    ``repeats`` is how often every run is trained, with seeds ``base_seed + r`` (see
    ``Space.design_trials``). ``levels`` values are stored as tuples.
    """

    levels: dict[str, tuple[Any, Any]]
    fraction: int = 1
    repeats: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.levels, Mapping) or not self.levels:
            raise BadInput("design.levels: needs a mapping of field -> [first, second] "
                           f"(got {excerpt(self.levels)})")
        levels: dict[str, tuple[Any, Any]] = {}
        for name, pair in self.levels.items():
            key = f"design.levels.{clip(name)}"
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise BadInput(f"{key}: needs exactly 2 levels [first, second] (got {excerpt(pair)})")
            if not all(is_scalar(v) for v in pair):
                raise BadInput(f"{key}: levels must be numbers, strings or booleans "
                               f"(got {excerpt(list(pair))})")
            if same_value(pair[0], pair[1]):
                raise BadInput(f"{key}: the 2 levels must differ (got {excerpt(list(pair))})")
            levels[str(name)] = (pair[0], pair[1])
        object.__setattr__(self, "levels", levels)
        k = len(levels)
        for key in ("fraction", "repeats"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInput(f"design.{key}: must be an integer >= 1 (got {excerpt(value)})")
        if k > MAX_FULL_FACTORS:
            raise BadInput(f"design.levels: at most {MAX_FULL_FACTORS} factors (got {k})")
        if self.fraction != 1 and (k, self._p) not in GENERATORS:
            offered = ", ".join(str(f) for f in supported_fractions(k))
            raise BadInput(f"design.fraction: {self.fraction} is not offered for {k} factors "
                           f"(one of {offered}: resolution III or more)")

    # -- structure ---------------------------------------------------------------------------
    @property
    def _p(self) -> int:
        p = self.fraction.bit_length() - 1
        return p if 2 ** p == self.fraction else -1

    @property
    def factors(self) -> tuple[str, ...]:
        """The factor fields in order (A, B, C, ...)."""
        return tuple(self.levels)

    @property
    def letters(self) -> dict[str, str]:
        """Letter -> field, e.g. ``{"A": "batch_size", ...}``."""
        return dict(zip(LETTERS, self.factors, strict=False))

    @property
    def n_runs(self) -> int:
        """Distinct runs of one repeat: ``2^k / fraction``."""
        return 2 ** len(self.levels) // self.fraction

    @property
    def generators(self) -> tuple[str, ...]:
        """The generators in letters, e.g. ``("F = ABCDE",)``; ``()`` for a full factorial."""
        k = len(self.levels)
        words = GENERATORS.get((k, self._p), ()) if self.fraction > 1 else ()
        return tuple(f"{LETTERS[k - len(words) + i]} = {w}" for i, w in enumerate(words))

    def _relation_masks(self) -> list[int]:
        """Every word of the defining relation (the group the generators span, minus I)."""
        k = len(self.levels)
        gens = [_mask(g.split(" = ")[1]) | 1 << (k - self._p + i)
                for i, g in enumerate(self.generators)]
        group = {0}
        for g in gens:
            group |= {w ^ g for w in group}
        return sorted(group - {0}, key=lambda w: (bin(w).count("1"), _word(w)))

    @property
    def defining_relation(self) -> tuple[str, ...]:
        """The words ``w`` of ``I = w1 = w2 = ...`` in letters, shortest first; ``()`` when
        nothing is aliased (full factorial)."""
        return tuple(_word(w) for w in self._relation_masks())

    @property
    def resolution(self) -> int | None:
        """Length of the shortest defining word; ``None`` for a full factorial (no aliasing)."""
        masks = self._relation_masks()
        return min(bin(w).count("1") for w in masks) if masks else None

    def aliases(self, *effect: str, max_order: int | None = None) -> tuple[str, ...]:
        """The effects that cannot be told apart from ``effect`` (given as field names: one for
        a main effect, two for a 2FI, ...). Each alias is written as its fields joined by ``:``
        in factor order (``"batch_size:lr"``), lowest order first; ``max_order`` drops
        interactions of more factors than that. ``()`` when ``effect`` is clear of everything.
        """
        index = {f: i for i, f in enumerate(self.factors)}
        unknown = [f for f in effect if f not in index]
        if unknown or not effect or len(set(effect)) != len(effect):
            raise BadInput(f"aliases: expected distinct factors of the design "
                           f"({', '.join(self.factors)}), got {excerpt(list(effect))}")
        target = sum(1 << index[f] for f in effect)
        out = []
        for w in self._relation_masks():
            alias = target ^ w
            order = bin(alias).count("1")
            if max_order is None or order <= max_order:
                out.append((order, alias))
        return tuple(":".join(f for i, f in enumerate(self.factors) if a >> i & 1)
                     for _, a in sorted(out))

    # -- runs ---------------------------------------------------------------------------------
    def coded(self) -> list[dict[str, int]]:
        """The runs in standard order, each field coded -1 (first level) or +1 (second)."""
        k = len(self.levels)
        base = k - (self._p if self.fraction > 1 else 0)
        gens = [_mask(g.split(" = ")[1]) for g in self.generators]
        rows = []
        for i in range(2 ** base):
            signs = [1 if i >> j & 1 else -1 for j in range(base)]
            for g in gens:
                sign = 1
                for j in range(base):
                    if g >> j & 1:
                        sign *= signs[j]
                signs.append(sign)
            rows.append(dict(zip(self.factors, signs, strict=True)))
        return rows

    def runs(self) -> list[dict[str, Any]]:
        """The runs in standard order as field -> level value (the same order as `coded`)."""
        return [{f: self.levels[f][0 if s < 0 else 1] for f, s in row.items()}
                for row in self.coded()]

    def to_dict(self) -> dict[str, Any]:
        """The space-file form: ``{type: factorial, levels, fraction, repeats}``."""
        return {"type": "factorial",
                "levels": {f: list(pair) for f, pair in self.levels.items()},
                "fraction": self.fraction, "repeats": self.repeats}

    @classmethod
    def from_dict(cls, spec: Any) -> Design:
        """Build from the space-file form; unknown keys raise :class:`BadInput`."""
        if not isinstance(spec, Mapping):
            raise BadInput("design: expected a mapping {type: factorial, levels: {...}, "
                           f"fraction: 1, repeats: 1}} (got {excerpt(spec)})")
        unknown = sorted(set(spec) - {"type", "levels", "fraction", "repeats"})
        if unknown:
            raise BadInput(f"design.{unknown[0]}: unknown key "
                           "(a design has type, levels, fraction, repeats)")
        if spec.get("type", "factorial") != "factorial":
            raise BadInput(f"design.type: only 'factorial' is offered (got {excerpt(spec['type'])})")
        if "levels" not in spec:
            raise BadInput("design.levels: missing")
        return cls(dict(spec["levels"]) if isinstance(spec["levels"], Mapping)
                   else spec["levels"], spec.get("fraction", 1), spec.get("repeats", 1))


def interaction_columns(coded: list[dict[str, int]], order: int = 2) -> dict[str, list[int]]:
    """Columns of every interaction of ``order`` factors (products of coded columns), named
    ``"a:b"``; with ``order=1`` the main-effect columns. For analysis and tests."""
    if not coded:
        return {}
    factors = list(coded[0])
    cols = {}
    for combo in combinations(factors, order):
        col = []
        for row in coded:
            v = 1
            for f in combo:
                v *= row[f]
            col.append(v)
        cols[":".join(combo)] = col
    return cols
