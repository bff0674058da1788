"""Properties that hold for any trial table: Shapley shares sum to the fitted gap, Holm's p is
never below the raw p, observed undo values are cell-mean differences, missing stays missing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from why_sim import full_cells

from camotune.results.why import analyse_response, fit_response, why_report
from camotune.results.why.contrasts import gap
from camotune.results.why.shapley import shapley_shares

tables = st.builds(
    lambda k, n_seeds, seed, n_missing: (k, n_seeds, seed, n_missing),
    st.integers(2, 5), st.integers(1, 3), st.integers(0, 2**31 - 1), st.integers(0, 4),
)


def _frame(k: int, n_seeds: int, seed: int, n_missing: int):
    import pandas as pd

    rng = np.random.default_rng(seed)
    factors = [f"f{i}" for i in range(k)]
    coef = rng.normal(0, 0.1, size=k + 1)
    rows = []
    for s in range(n_seeds):
        for cell in full_cells(factors):
            x = np.array([cell[f] for f in factors])
            y = coef[0] + coef[1:] @ x + coef[0] * x[0] * x[-1] + rng.normal(0, 0.05)
            rows.append({**cell, "seed": s, "y": y})
    frame = pd.DataFrame(rows)
    gone = rng.choice(len(frame), size=min(n_missing, len(frame) - 4), replace=False)
    frame.loc[gone, "y"] = np.nan
    return factors, frame


@pytest.mark.slow
@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(tables)
def test_report_invariants(spec):
    factors, frame = _frame(*spec)
    fit = fit_response(frame, factors, "y")
    total = sum(s["value"] for s in shapley_shares(fit).values())
    assert abs(total - gap(fit).fitted.value) < 1e-9
    result = analyse_response(frame, factors, "y")
    assert result["n_missing"] == int(frame["y"].isna().sum())
    for row in result["terms"]:
        if row["p"] is not None and np.isfinite(row["p"]):
            assert row["p_adjusted"] >= row["p"] - 1e-15
    means = frame.dropna(subset=["y"]).groupby([*factors, "seed"])["y"].mean()
    bad = (1,) * len(factors)
    for entry in result["undo"]:
        if not entry["observed"]:
            continue
        cell = tuple(-1 if f in entry["set"] else 1 for f in factors)
        diffs = [means[(*cell, s)] - means[(*bad, s)] for s in fit.seeds
                 if (*cell, s) in means.index and (*bad, s) in means.index]
        assert abs(entry["value"] - np.mean(diffs)) < 1e-12
    json.dumps(why_report(frame, factors, ["y"]), allow_nan=False)
