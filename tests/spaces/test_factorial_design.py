"""Two-level factorial designs: run counts, balance, orthogonality, resolution, aliasing."""

from __future__ import annotations

from itertools import combinations

import pytest

from camotune.errors import BadInput
from camotune.spaces import Design, load_space
from camotune.spaces.design import GENERATORS, LETTERS, interaction_columns

SIX = {"a": (0, 1), "b": (0, 1), "c": (0, 1), "d": (0, 1), "e": (0, 1), "f": (0, 1)}


def _dot(u: list[int], v: list[int]) -> int:
    return sum(x * y for x, y in zip(u, v, strict=True))


def _levels(k: int) -> dict[str, tuple[int, int]]:
    return {f"x{i}": (0, 1) for i in range(k)}


def test_seed_collapse_is_a_resolution_vi_half_fraction():
    design = load_space("seed-collapse").design
    assert design.n_runs == 32 and design.repeats == 2
    assert design.generators == ("F = ABCDE",)
    assert design.defining_relation == ("ABCDEF",)
    assert design.resolution == 6
    assert len(design.runs()) == 32


def test_seed_collapse_is_balanced_and_its_runs_distinct():
    design = load_space("seed-collapse").design
    runs = design.runs()
    for name, (first, second) in design.levels.items():
        values = [run[name] for run in runs]
        assert values.count(first) == values.count(second) == 16
    assert len({tuple(run.values()) for run in runs}) == 32
    assert len({tuple(row.values()) for row in design.coded()}) == 32


def test_seed_collapse_main_effects_and_2fis_are_all_orthogonal():
    coded = load_space("seed-collapse").design.coded()
    cols = {**interaction_columns(coded, 1), **interaction_columns(coded, 2)}
    assert len(cols) == 6 + 15
    for (n1, c1), (n2, c2) in combinations(cols.items(), 2):
        assert _dot(c1, c2) == 0, (n1, n2)
    for col in cols.values():
        assert sum(col) == 0


def test_seed_collapse_lr_by_batch_is_clear_of_every_2fi():
    design = load_space("seed-collapse").design
    assert design.aliases("lr", "batch_size", max_order=3) == ()
    assert design.aliases("lr", "batch_size") == (
        "accumulation_steps:img_size:use_ema:deep_supervision",)
    assert design.aliases("lr") == (
        "batch_size:accumulation_steps:img_size:use_ema:deep_supervision",)


def test_quarter_fraction_of_six_is_resolution_iv():
    design = Design(SIX, fraction=4)
    assert design.n_runs == 16
    assert design.generators == ("E = ABC", "F = BCD")
    assert design.defining_relation == ("ABCE", "ADEF", "BCDF")
    assert design.resolution == 4
    coded = design.coded()
    mains = interaction_columns(coded, 1)
    twos = interaction_columns(coded, 2)
    for m, mc in mains.items():  # main effects clear of each other and of every 2FI
        for n, nc in {**mains, **twos}.items():
            if n != m:
                assert _dot(mc, nc) == 0, (m, n)
    # ... but some 2FIs cannot be separated (this is what resolution IV gives up)
    assert twos["a:b"] == twos["c:e"]
    assert design.aliases("a", "b", max_order=2) == ("c:e",)
    assert all(len(alias.split(":")) >= 3 for alias in design.aliases("a"))


def test_full_factorial_is_in_standard_order():
    design = Design({"x": ("lo", "hi"), "y": (1, 2), "z": (False, True)})
    assert design.resolution is None and design.defining_relation == ()
    assert design.generators == () and design.aliases("x", "y") == ()
    assert [tuple(r.values()) for r in design.coded()] == [
        (-1, -1, -1), (1, -1, -1), (-1, 1, -1), (1, 1, -1),
        (-1, -1, 1), (1, -1, 1), (-1, 1, 1), (1, 1, 1)]
    assert design.runs()[0] == {"x": "lo", "y": 1, "z": False}  # first level = -1
    assert design.runs()[-1] == {"x": "hi", "y": 2, "z": True}


def _word_length_pattern(k: int, gens: list[str]) -> tuple[int, ...]:
    base = k - len(gens)
    masks = [sum(1 << LETTERS.index(ch) for ch in g) | 1 << (base + i)
             for i, g in enumerate(gens)]
    group = {0}
    for m in masks:
        group |= {w ^ m for w in group}
    lengths = [bin(w).count("1") for w in group - {0}]
    return tuple(lengths.count(n) for n in range(1, k + 1))


@pytest.mark.parametrize(("k", "p"), sorted(GENERATORS))
def test_table_generators_have_minimum_aberration(k: int, p: int):
    base = k - p
    candidates = ["".join(LETTERS[i] for i in range(base) if m >> i & 1)
                  for m in range(1, 2 ** base) if bin(m).count("1") >= 2]
    best = min(_word_length_pattern(k, list(c)) for c in combinations(candidates, p))
    assert _word_length_pattern(k, list(GENERATORS[(k, p)])) == best


@pytest.mark.parametrize(("k", "p"), sorted(GENERATORS))
def test_every_defining_word_is_constant_over_the_runs(k: int, p: int):
    design = Design(_levels(k), fraction=2 ** p)
    assert design.n_runs == 2 ** (k - p) == len(design.coded())
    assert design.resolution >= 3
    letter_of = {f: ch for ch, f in design.letters.items()}
    for row in design.coded():
        for word in design.defining_relation:
            product = 1
            for f, s in row.items():
                if letter_of[f] in word:
                    product *= s
            assert product == 1, word
    assert len({tuple(r.values()) for r in design.coded()}) == design.n_runs


@pytest.mark.parametrize(("k", "fraction"), [(2, 2), (6, 3), (6, 16), (3, 4), (9, 2), (6, 0)])
def test_unsupported_fractions_are_rejected(k: int, fraction: int):
    with pytest.raises(BadInput, match=r"^design\.fraction: ") as err:
        Design(_levels(k), fraction=fraction)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("levels", "kw", "key"), [
    ({"a": (1,)}, {}, "design.levels.a"),
    ({"a": (1, 2, 3)}, {}, "design.levels.a"),
    ({"a": (1, 1)}, {}, "design.levels.a"),
    ({"a": (1, 2)}, {"repeats": 0}, "design.repeats"),
    ({}, {}, "design.levels"),
])
def test_bad_designs(levels, kw, key):
    with pytest.raises(BadInput, match=rf"^{key}: "):
        Design(levels, **kw)


def test_aliases_rejects_unknown_factors():
    with pytest.raises(BadInput, match="aliases"):
        Design(SIX, fraction=2).aliases("a", "nope")


def test_to_dict_round_trip():
    design = Design(SIX, fraction=2, repeats=3)
    assert Design.from_dict(design.to_dict()) == design
