"""The why model on planted data: effects recovered, Holm never below the raw p, a null
family-wise rate near alpha, aliased terms named, missing values left missing."""

from __future__ import annotations

import gc
import math

import numpy as np
import pandas as pd
import pytest
from why_sim import NEEDS_BOTH_COEF, fraction_cells, full_cells, needs_both, simulate

from camotune.errors import BadInput
from camotune.results.why import fit_response
from camotune.results.why.terms import holm, term_table

ABCD = ["A", "B", "C", "D"]


def test_planted_effects_lie_in_their_intervals_and_holm_is_never_below_raw_p():
    rng = np.random.default_rng(0)
    frame = simulate(needs_both, full_cells(ABCD), range(4), rng)
    fit = fit_response(frame, ABCD, "y", alpha=0.005)  # 10 intervals at once: Bonferroni
    assert fit.seeds == [0, 1, 2, 3] and not fit.dropped
    rows = {r["term"]: r for r in term_table(fit)}
    assert set(rows) == set(NEEDS_BOTH_COEF)
    for term, coef in NEEDS_BOTH_COEF.items():
        low, high = rows[term]["ci"]
        assert low <= 2 * coef <= high, term
        assert rows[term]["p_adjusted"] >= rows[term]["p"]
    assert rows["A:B"]["significant"] and rows["A"]["significant"]
    assert not rows["D"]["significant"] and not rows["C:D"]["significant"]


def test_effect_intervals_cover_at_their_level():
    rng = np.random.default_rng(7)
    cells = full_cells(ABCD)
    hits = total = 0
    for _ in range(100):
        fit = fit_response(simulate(needs_both, cells, (0, 1), rng), ABCD, "y")
        ci = fit.results.conf_int(alpha=0.05)
        for param, term in fit.param_terms().items():
            truth = NEEDS_BOTH_COEF[fit.name(term)]
            hits += ci.loc[param, 0] <= truth <= ci.loc[param, 1]
            total += 1
    assert 0.92 <= hits / total <= 0.98


def test_holm_keeps_nan_out_of_the_family():
    adjusted = holm([0.01, math.nan, 0.04], 0.05)
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.04)


@pytest.mark.slow
def test_null_model_family_wise_rate_after_holm_is_near_alpha():
    """21 null terms (6 factors, resolution-VI half fraction, 2 seeds): the raw per-term test
    flags something in most runs; Holm's flags something in about alpha of them."""
    rng = np.random.default_rng(2026)
    factors = list("ABCDEF")
    cells = fraction_cells(factors, 2)
    any_raw = any_holm = 0
    n_sims = 200
    # statsmodels' Holm runs gc.collect() on every call; freezing what the test session has
    # already allocated (torch and all) keeps each collection small
    gc.freeze()
    try:
        for _ in range(n_sims):
            frame = simulate(lambda c: 0.3, cells, (0, 1), rng)
            rows = term_table(fit_response(frame, factors, "y"))
            assert len(rows) == 21
            any_raw += any(r["p"] < 0.05 for r in rows)
            any_holm += any(r["significant"] for r in rows)
            assert all(r["p_adjusted"] >= r["p"] for r in rows)
    finally:
        gc.unfreeze()
    assert any_raw / n_sims > 0.4
    assert any_holm / n_sims <= 0.08


def test_a_resolution_iv_fraction_drops_aliased_2fis_and_names_their_partners():
    rng = np.random.default_rng(1)
    frame = simulate(needs_both, fraction_cells(ABCD, 2), (0, 1), rng)  # D = ABC: AB = CD
    fit = fit_response(frame, ABCD, "y")
    rows = {r["term"]: r for r in term_table(fit)}
    assert rows["C:D"]["dropped"] and rows["C:D"]["aliased_with"] == ["A:B"]
    assert rows["A:B"]["effect"] is not None and "C:D" in rows["A:B"]["aliased_with"]
    assert "B:C:D" in rows["A"]["aliased_with"]  # A = BCD in this fraction
    assert len([r for r in rows.values() if r.get("dropped")]) == 3


def test_missing_responses_are_dropped_for_that_response_only_and_never_filled():
    rng = np.random.default_rng(3)
    frame = simulate(needs_both, full_cells(ABCD), (0, 1, 2), rng)
    frame["iou_at_2"] = frame["y"]
    gone = (frame["A"] == 1) & (frame["B"] == -1) & (frame["C"] == 1) & (frame["D"] == 1)
    frame.loc[gone, "iou_at_2"] = np.nan
    frame.loc[3, "iou_at_2"] = np.nan
    before = frame.copy()
    full, part = fit_response(frame, ABCD, "y"), fit_response(frame, ABCD, "iou_at_2")
    pd.testing.assert_frame_equal(frame, before)
    assert (len(full.data), full.n_missing, full.missing_cells) == (48, 0, [])
    assert (len(part.data), part.n_missing) == (44, 4)
    assert part.missing_cells == [(1, -1, 1, 1)]
    assert part.data["y"].notna().all()


def test_bad_tables_are_bad_input():
    frame = simulate(needs_both, full_cells(ABCD), (0, 1), np.random.default_rng(0))
    with pytest.raises(BadInput, match="no column"):
        fit_response(frame, ABCD, "nope")
    with pytest.raises(BadInput, match=r"-1 .* or \+1"):
        fit_response(frame.assign(A=frame["A"] * 2), ABCD, "y")
    with pytest.raises(BadInput, match="fewer than two"):
        fit_response(frame.assign(y=np.nan), ABCD, "y")
