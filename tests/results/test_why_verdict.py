"""The verdict names the revert set the planted model implies, says how it acts and what the
data cannot decide; the whole report is JSON-safe."""

from __future__ import annotations

import json

import numpy as np
import pytest
from why_sim import fraction_cells, full_cells, needs_both, simulate

from camotune.errors import BadInput
from camotune.results.why import analyse_response, render_text, why_report
from camotune.results.why.verdict import SHORT_RUNS

ABCD = ["A", "B", "C", "D"]


def test_an_interaction_needs_the_pair_and_the_verdict_names_it_jointly():
    frame = simulate(needs_both, full_cells(ABCD), (0, 1, 2), np.random.default_rng(0))
    r = analyse_response(frame, ABCD, "y")
    d = r["verdict_detail"]
    assert d["set"] == ["A", "B"] and d["joint"] is True and d["confirmed"] is True
    assert "Reverting {A, B}" in r["verdict"] and "jointly" in r["verdict"]
    assert "A:B" in r["verdict"] and SHORT_RUNS in r["verdict"]
    singles = {e["set"][0]: e for e in r["undo"] if len(e["set"]) == 1}
    assert all(e["ci"][1] < 0.9 * r["gap"]["observed"] for e in singles.values())


def test_additive_changes_act_separately():
    def additive(c):  # A and B each cost half the gap, no interaction
        return 0.5 - 0.1 * c["A"] - 0.1 * c["B"]

    frame = simulate(additive, full_cells(ABCD), (0, 1, 2), np.random.default_rng(1))
    d = analyse_response(frame, ABCD, "y")["verdict_detail"]
    assert d["set"] == ["A", "B"] and d["joint"] is False
    assert "separately" in d["text"]


def test_one_change_that_does_it_all_acts_alone():
    frame = simulate(lambda c: 0.5 - 0.2 * c["C"], full_cells(ABCD), (0, 1),
                     np.random.default_rng(2))
    d = analyse_response(frame, ABCD, "y")["verdict_detail"]
    assert d["set"] == ["C"] and "acts alone" in d["text"]


def test_no_gap_no_attribution():
    frame = simulate(lambda c: 0.3, full_cells(ABCD), (0, 1), np.random.default_rng(3))
    d = analyse_response(frame, ABCD, "y")["verdict_detail"]
    assert d["set"] is None and "do not show a gap" in d["text"]


def test_the_verdict_lists_what_the_data_cannot_decide():
    factors = list("ABCDE")
    cells = [*fraction_cells(factors, 2), dict.fromkeys(factors, -1)]  # + the good corner
    frame = simulate(needs_both, cells, (0,), np.random.default_rng(4), noise=0.005)
    frame.loc[frame.index[:2], "y"] = np.nan
    d = analyse_response(frame, factors, "y")["verdict_detail"]
    text = " ".join(d["cannot_decide"])
    assert "one seed only" in text and "have no value" in text
    assert "pure-error dof is 0" in text


def test_the_report_is_json_safe_and_keeps_missing_as_null():
    frame = simulate(needs_both, full_cells(ABCD), (0, 1), np.random.default_rng(5))
    frame["iou_epoch2"] = frame["y"]
    frame.loc[frame.index[:16], "iou_epoch2"] = np.nan  # seed 0 has no epoch-2 value
    frame["never"] = np.nan
    factors = [{"name": n, "good": 1, "bad": 2} for n in ABCD]
    report = why_report(frame, factors, ["y", "iou_epoch2", "never"],
                        design={"runs": 16, "seeds": [0, 1], "resolution": None, "aliases": {}})
    text = json.dumps(report, allow_nan=False)
    assert set(report) == {"factors", "design", "responses"}
    one = report["responses"]["y"]
    assert set(one) >= {"gap", "shapley", "undo", "apply", "terms", "lack_of_fit", "verdict"}
    assert set(one["undo"][0]) >= {"set", "value", "ci", "observed", "recovered_fraction"}
    assert set(one["terms"][0]) >= {"term", "effect", "ci", "p", "p_adjusted"}
    assert set(one["lack_of_fit"]) >= {"F", "p", "dof"}
    assert set(one["gap"]) >= {"observed", "fitted", "ci"}
    part = report["responses"]["iou_epoch2"]
    assert part["n_trials"] == 16 and part["n_missing"] == 16
    assert part["gap"]["observed_ci"] == [None, None]  # one seed left: no CI, not a number
    assert report["responses"]["never"] == {"error": "why: never: fewer than two trials have a value"}
    rendered = render_text(report)
    assert "== y (32 trials, 0 missing) ==" in rendered and "verdict: " in rendered
    assert "never" in text


def test_no_response_is_bad_input():
    frame = simulate(needs_both, full_cells(ABCD), (0,), np.random.default_rng(6))
    with pytest.raises(BadInput, match="no response"):
        why_report(frame, ABCD, [])


def test_one_seed_falls_back_on_the_model_for_the_gap_and_says_so():
    frame = simulate(needs_both, full_cells(ABCD), (0,), np.random.default_rng(7), noise=0.01)
    r = analyse_response(frame, ABCD, "y")
    d = r["verdict_detail"]
    assert r["gap"]["observed_ci"] == [None, None] or np.isnan(r["gap"]["observed_ci"][0])
    assert d["set"] == ["A", "B"] and d["joint"] is True
    assert any("one seed only" in u for u in d["cannot_decide"])


def test_a_gap_two_seeds_cannot_show_is_judged_on_the_pooled_fit():
    # 2 seeds with a large block offset: the observed gap's t interval (1 dof) spans 0, the
    # fitted one (residual variance pooled over all 32 trials) does not
    def model(c):
        return 0.5 - 0.08 * (c["C"] + 1)

    frame = simulate(model, full_cells(ABCD), (0, 1), np.random.default_rng(7), noise=0.03)
    r = analyse_response(frame, ABCD, "y")
    low, high = r["gap"]["observed_ci"]
    assert low < 0 < high and r["gap"]["fitted_ci"][0] > 0
    d = r["verdict_detail"]
    assert "judged on the fitted CI" in d["text"]
    assert d["set"] == ["C"] and d["confirmed"] is True


def test_lack_of_fit_falls_back_to_the_observed_gap():
    # a planted three-factor interaction the two-factor model cannot hold: lack of fit
    def model(c):
        return 0.4 - 0.1 * c["A"] + 0.1 * c["A"] * c["B"] * c["C"]

    frame = simulate(model, full_cells(ABCD), (0, 1, 2), np.random.default_rng(8), noise=0.01)
    r = analyse_response(frame, ABCD, "y")
    assert r["lack_of_fit"]["p"] < 0.05
    assert "judged on the observed CI over seeds (the model shows lack of fit)" in \
        r["verdict_detail"]["text"]
