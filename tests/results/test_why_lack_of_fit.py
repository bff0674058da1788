"""Lack of fit finds a planted three-factor term, and says why when it cannot test."""

from __future__ import annotations

import math

import numpy as np
from why_sim import fraction_cells, full_cells, simulate

from camotune.results.why import fit_response
from camotune.results.why.lack_of_fit import lack_of_fit

ABC = ["A", "B", "C"]


def _model(three: float):
    return lambda c: 0.3 - 0.05 * c["A"] + 0.02 * c["B"] * c["C"] + three * c["A"] * c["B"] * c["C"]


def test_a_planted_three_factor_term_shows_as_lack_of_fit():
    frame = simulate(_model(0.05), full_cells(ABC), (0, 1, 2), np.random.default_rng(0))
    lof = lack_of_fit(fit_response(frame, ABC, "y"))
    assert lof["dof"] == [1, 24 - 8 - 2] and lof["pure_error_dof"] == 14
    assert lof["p"] < 1e-4 and lof["F"] > 20 and lof["reason"] == ""
    assert lof["left_out"] == [["A:B:C"]]


def test_without_a_three_factor_term_lack_of_fit_rarely_fires():
    rng = np.random.default_rng(1)
    p_values = [lack_of_fit(fit_response(simulate(_model(0.0), full_cells(ABC), (0, 1, 2), rng),
                                         ABC, "y"))["p"] for _ in range(40)]
    assert sum(p < 0.05 for p in p_values) <= 6


def test_one_seed_has_no_pure_error_and_says_so():
    frame = simulate(_model(0.05), full_cells(ABC), (0,), np.random.default_rng(2))
    lof = lack_of_fit(fit_response(frame, ABC, "y"))
    assert lof["pure_error_dof"] == 0 and math.isnan(lof["F"]) and math.isnan(lof["p"])
    assert "pure-error dof is 0" in lof["reason"]


def test_a_saturated_fraction_has_nothing_left_to_test():
    factors = list("ABCDE")  # the resolution-V half fraction: 16 cells, 16 model terms
    frame = simulate(lambda c: 0.3, fraction_cells(factors, 2), (0, 1), np.random.default_rng(3))
    lof = lack_of_fit(fit_response(frame, factors, "y"))
    assert lof["dof"][0] == 0 and lof["pure_error_dof"] == 15
    assert "uses every cell" in lof["reason"] and lof["left_out"] == []


def test_left_out_terms_of_a_half_fraction_are_named_in_alias_pairs():
    factors = list("ABCDEF")  # F = ABCDE: each three-factor term is aliased with another
    frame = simulate(lambda c: 0.3, fraction_cells(factors, 2), (0, 1), np.random.default_rng(4))
    lof = lack_of_fit(fit_response(frame, factors, "y"))
    assert lof["dof"][0] == 10 and len(lof["left_out"]) == 10
    assert ["A:B:C", "D:E:F"] in lof["left_out"]
    assert all(len(group) == 2 for group in lof["left_out"])


def test_two_factors_leave_nothing_out():
    frame = simulate(lambda c: 0.3 - 0.1 * c["A"], full_cells(["A", "B"]), (0, 1),
                     np.random.default_rng(5))
    lof = lack_of_fit(fit_response(frame, ["A", "B"], "y"))
    assert lof["nothing_left_out"] and lof["dof"] == [0, 3] and math.isnan(lof["F"])
