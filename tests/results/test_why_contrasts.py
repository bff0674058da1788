"""Gap, undo and apply effects against the cell means; the Shapley split against the gap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from why_sim import fraction_cells, full_cells, needs_both, simulate

from camotune.results.why import fit_response
from camotune.results.why.contrasts import apply_effects, gap, undo_effects
from camotune.results.why.shapley import shapley_shares
from camotune.results.why.terms import term_table

ABCD = ["A", "B", "C", "D"]
BAD = {"A": 1, "B": 1, "C": 1, "D": 1}
GOOD = {"A": -1, "B": -1, "C": -1, "D": -1}


def _mean(frame, cell, seed=None):
    rows = frame
    for name, code in cell.items():
        rows = rows[rows[name] == code]
    if seed is not None:
        rows = rows[rows["seed"] == seed]
    return rows["y"].mean()


@pytest.fixture
def frame():
    return simulate(needs_both, full_cells(ABCD), (0, 1, 2), np.random.default_rng(11))


def test_the_observed_gap_is_the_difference_of_the_corner_means(frame):
    the_gap = gap(fit_response(frame, ABCD, "y"))
    assert the_gap.observed.value == pytest.approx(_mean(frame, GOOD) - _mean(frame, BAD))
    assert the_gap.observed.n_seeds == 3
    low, high = the_gap.observed.ci
    assert low < 0.41 < high  # planted: 0.505 - 0.095
    assert the_gap.fitted.low < 0.41 < the_gap.fitted.high


def test_undo_and_apply_equal_the_observed_cell_mean_differences(frame):
    fit = fit_response(frame, ABCD, "y")
    the_gap = gap(fit)
    undo = undo_effects(fit, the_gap)
    assert [e["set"] for e in undo][:5] == [["A"], ["B"], ["C"], ["D"], ["A", "B"]]
    assert len(undo) == 4 + 6 and all(e["observed"] for e in undo)
    for e in undo:
        cell = {**BAD, **dict.fromkeys(e["set"], -1)}
        assert e["value"] == pytest.approx(_mean(frame, cell) - _mean(frame, BAD))
        assert e["recovered_fraction"] == pytest.approx(e["value"] / the_gap.observed.value)
        diffs = [_mean(frame, cell, s) - _mean(frame, BAD, s) for s in (0, 1, 2)]
        assert e["ci"][0] < np.mean(diffs) < e["ci"][1]
    by_set = {tuple(e["set"]): e for e in undo}
    assert by_set[("A",)]["recovered_fraction"] < 0.2 and by_set[("B",)]["recovered_fraction"] < 0.2
    assert by_set[("A", "B")]["recovered_fraction"] > 0.9
    for e in apply_effects(fit, the_gap):
        cell = {**GOOD, **dict.fromkeys(e["set"], 1)}
        assert e["value"] == pytest.approx(_mean(frame, cell) - _mean(frame, GOOD))
        assert e["gap_fraction"] == pytest.approx(e["value"] / -the_gap.observed.value)


def test_cells_not_run_are_fitted_and_say_so():
    rng = np.random.default_rng(5)
    frame = simulate(needs_both, fraction_cells(list("ABCDEF"), 2), (0, 1),
                     rng)  # F = ABCDE: both corners are in, most single reverts are not
    fit = fit_response(frame, list("ABCDEF"), "y")
    the_gap = gap(fit)
    assert the_gap.observed is not None
    undo = {tuple(e["set"]): e for e in undo_effects(fit, the_gap)}
    assert not undo[("A",)]["observed"]  # one factor flipped from the bad corner: not in
    assert undo[("A",)]["value"] == undo[("A",)]["fitted"]
    assert undo[("A", "B")]["observed"]  # two flipped keeps ABCDEF = +1: in the fraction
    assert math.isfinite(undo[("A", "B")]["fitted_ci"][0])


def test_shapley_shares_sum_to_the_fitted_gap_and_are_minus_the_main_effects(frame):
    fit = fit_response(frame, ABCD, "y")
    shares = shapley_shares(fit)
    assert sum(s["value"] for s in shares.values()) == pytest.approx(gap(fit).fitted.value,
                                                                     abs=1e-9)
    effects = {r["term"]: r for r in term_table(fit)}
    for name, share in shares.items():
        assert share["value"] == pytest.approx(-effects[name]["effect"], abs=1e-12)
        assert share["ci"][0] == pytest.approx(-effects[name]["ci"][1], abs=1e-9)


def test_shapley_shares_sum_to_the_gap_in_a_fraction_with_missing_trials():
    rng = np.random.default_rng(6)
    factors = list("ABCDEF")
    frame = simulate(needs_both, fraction_cells(factors, 2), (0, 1, 2), rng)
    frame.loc[[4, 9, 40], "y"] = np.nan
    fit = fit_response(frame, factors, "y")
    total = sum(s["value"] for s in shapley_shares(fit).values())
    assert total == pytest.approx(gap(fit).fitted.value, abs=1e-9)
