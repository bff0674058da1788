"""Collapse attribution on synthetic results tables with planted effects (no training)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from camotune.errors import BadInput
from camotune.results.attribution import (
    EFFECT_COLUMNS,
    GAP_COLUMNS,
    SEPARATION_COLUMNS,
    attribution_report,
    ema_gap,
    factorial_effects,
    separating_parameters,
    verdict,
)

# the seed report's two settings: first level = the run that worked, second = the collapse
LEVELS = {"batch_size": (2, 16), "accumulation_steps": (4, 8), "lr": (2.5e-4, 1e-4),
          "img_size": (384, 320), "deep_supervision": (False, True), "use_ema": (False, True)}
TRUE_LR, TRUE_LR_BATCH = -0.2, -0.1


def _half_fraction(repeats: int = 2, noise: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """2^(6-1) with F = ABCDE, ``repeats`` seeds per run, planted lr and lr x batch effects."""
    rng = np.random.default_rng(seed)
    names = list(LEVELS)
    rows = []
    for rep in range(repeats):
        for abcde in itertools.product([-1, 1], repeat=5):
            c = dict(zip(names, [*abcde, int(np.prod(abcde))], strict=True))
            # coefficients are half the effects: an effect spans -1 to +1
            y = 0.4 + TRUE_LR / 2 * c["lr"] + TRUE_LR_BATCH / 2 * c["lr"] * c["batch_size"]
            row = {f: LEVELS[f][(v + 1) // 2] for f, v in c.items()}
            row.update(seed=rep, iou_epoch3=y + rng.normal(0, noise),
                       final_iou=y + 0.1 + rng.normal(0, noise), stop_reason="completed")
            rows.append(row)
    return pd.DataFrame(rows)


def _row(effects: pd.DataFrame, term: str) -> pd.Series:
    return effects.set_index("term").loc[term]


def test_planted_main_effect_and_interaction_are_found() -> None:
    effects = factorial_effects(_half_fraction(), LEVELS, "iou_epoch3")
    assert list(effects.columns) == EFFECT_COLUMNS
    assert len(effects) == 6 + 15  # resolution VI: every main effect and 2FI is estimable
    assert (effects["aliased_with"] == "").all()
    assert effects["term"].iloc[:2].tolist() == ["lr", "batch_size:lr"]  # largest first
    for term, truth in (("lr", TRUE_LR), ("batch_size:lr", TRUE_LR_BATCH)):
        row = _row(effects, term)
        assert row["significant"] and row["p_value"] < 1e-6
        assert row["ci_low"] <= truth <= row["ci_high"]
    null = _row(effects, "img_size")
    assert not null["significant"] and null["ci_low"] < 0 < null["ci_high"]
    info = effects.attrs["attribution"]
    assert (info["dof"], info["n_trials"], info["n_points"], info["repeats_min"]) == (42, 64, 32, 2)

    text = verdict(effects, "iou_epoch3")
    assert "Lowering the LR from 0.00025 to 0.0001 changes epoch-3 IoU by -0.2" in text
    assert "95% CI" in text and "interact" in text and "batch size 16" in text
    assert "cannot decide" in text and "image size" in text


def test_effects_equal_differences_of_means() -> None:
    rng = np.random.default_rng(3)
    levels = {"a": (1, 2), "b": ("x", "y"), "c": (False, True)}
    rows = [{"a": a, "b": b, "c": c, "r": rng.uniform()}
            for _ in range(3) for a, b, c in itertools.product(*levels.values())]
    df = pd.DataFrame(rows)
    effects = factorial_effects(df, levels, "r").set_index("term")
    for f, (first, second) in levels.items():
        expected = df.loc[df[f] == second, "r"].mean() - df.loc[df[f] == first, "r"].mean()
        assert effects.loc[f, "effect"] == pytest.approx(expected, abs=1e-12)
    same = (df["a"] == 2) == (df["b"] == "y")
    expected = df.loc[same, "r"].mean() - df.loc[~same, "r"].mean()
    assert effects.loc["a:b", "effect"] == pytest.approx(expected, abs=1e-12)
    mains = factorial_effects(df, levels, "r", interactions=False).set_index("term")
    assert sorted(mains.index) == ["a", "b", "c"]
    assert mains["effect"].to_dict() == pytest.approx(effects.loc[["a", "b", "c"], "effect"].to_dict())


def test_single_replicate_says_cis_rest_on_assumptions() -> None:
    effects = factorial_effects(_half_fraction(repeats=1), LEVELS, "iou_epoch3")
    assert effects.attrs["attribution"]["dof"] == 32 - 22
    assert _row(effects, "lr")["ci_low"] <= TRUE_LR <= _row(effects, "lr")["ci_high"]
    assert "one trial per design point" in verdict(effects, "iou_epoch3")


def _quarter_fraction(sign_e: int = 1) -> tuple[pd.DataFrame, dict[str, tuple[int, int]]]:
    """2^(6-2), E = sign_e * ABC, F = BCD, two repeats, a:b planted at +0.1."""
    levels = {f: (0, 1) for f in "abcdef"}
    rng = np.random.default_rng(1)
    rows = []
    for _, (a, b, c, d) in itertools.product(range(2), itertools.product([-1, 1], repeat=4)):
        coded = {"a": a, "b": b, "c": c, "d": d, "e": sign_e * a * b * c, "f": b * c * d}
        row = {k: (v + 1) // 2 for k, v in coded.items()}
        row["y"] = 0.3 + 0.05 * a * b + rng.normal(0, 0.005)
        rows.append(row)
    return pd.DataFrame(rows), levels


def test_quarter_fraction_reports_aliased_interactions() -> None:
    df, levels = _quarter_fraction()
    effects = factorial_effects(df, levels, "y")
    fitted = effects[effects["effect"].notna()]
    assert len(fitted) == 6 + 7  # 16 runs: intercept, 6 mains, 7 alias chains of 2FIs
    assert effects["effect"].iloc[len(fitted):].isna().all()  # aliased rows sort last
    ab = _row(effects, "a:b")
    assert ab["aliased_with"] == "c:e" and ab["ci_low"] <= 0.1 <= ab["ci_high"]
    assert _row(effects, "c:e")["aliased_with"] == "a:b"
    assert set(_row(effects, "a:e")["aliased_with"].split(", ")) == {"b:c", "d:f"}
    text = verdict(effects, "y")
    assert "a:b + c:e" in text and "cannot separate aliased terms" in text


def test_negated_generator_gives_signed_alias() -> None:
    df, levels = _quarter_fraction(sign_e=-1)
    effects = factorial_effects(df, levels, "y")
    assert _row(effects, "a:b")["aliased_with"] == "-c:e"
    assert _row(effects, "c:e")["aliased_with"] == "-a:b"


def test_saturated_design_without_repeats_cannot_decide() -> None:
    df = pd.DataFrame([{"a": a, "b": b, "y": 0.1 * a + 0.05 * b + 0.01 * a * b}
                       for a in (0, 1) for b in (0, 1)])
    effects = factorial_effects(df, {"a": (0, 1), "b": (0, 1)}, "y")
    assert effects.attrs["attribution"]["dof"] == 0
    # on 0/1 levels: a's effect is 0.1 plus half the interaction, which is (0.01) / 2
    assert effects["effect"].tolist() == pytest.approx([0.105, 0.055, 0.005])
    assert effects[["ci_low", "ci_high", "p_value"]].isna().all().all()
    assert not effects["significant"].any()
    text = verdict(effects, "y")
    assert "cannot decide" in text and "No residual degrees of freedom" in text


def _small(repeats: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = [{"lr": lr, "batch_size": bs, "use_ema": ema, "seed": s, "stop_reason": "completed",
             "final_iou": 0.5 - (0.2 if lr == 1e-4 else 0.0) + rng.normal(0, 0.01)}
            for s in range(repeats) for lr, bs, ema in
            itertools.product((2.5e-4, 1e-4), (2, 16), (False, True))]
    return pd.DataFrame(rows)


SMALL = {"lr": (2.5e-4, 1e-4), "batch_size": (2, 16), "use_ema": (False, True)}


def test_missing_responses_zero_for_failed_trials_dropped_otherwise() -> None:
    df = _small()
    df.loc[[0, 5], ["final_iou", "stop_reason"]] = [np.nan, "diverged"]
    df.loc[9, ["final_iou", "stop_reason"]] = [np.nan, "oom"]

    zero = factorial_effects(df, SMALL, "final_iou")
    expected = df.drop(index=9).fillna({"final_iou": 0.0})
    assert zero["effect"].tolist() == pytest.approx(
        factorial_effects(expected, SMALL, "final_iou")["effect"].tolist())
    info = zero.attrs["attribution"]
    assert (info["n_zeroed"], info["n_dropped"], info["n_trials"]) == (2, 1, 15)
    assert "2 trial(s) that diverged or collapsed" in verdict(zero, "final_iou")
    assert "1 trial(s) without a value are left out" in verdict(zero, "final_iou")

    dropped = factorial_effects(df, SMALL, "final_iou", missing="drop")
    assert dropped["effect"].tolist() == pytest.approx(
        factorial_effects(df.dropna(subset=["final_iou"]), SMALL, "final_iou")["effect"].tolist())
    assert dropped.attrs["attribution"]["n_dropped"] == 3
    with pytest.raises(ValueError, match="missing"):
        factorial_effects(df, SMALL, "final_iou", missing="mean")


def test_level_matching_and_bad_input() -> None:
    df = _small()
    as_text = df.assign(use_ema=df["use_ema"].map(str), lr=df["lr"] * (1 + 1e-12))
    assert factorial_effects(as_text, SMALL, "final_iou")["effect"].tolist() == pytest.approx(
        factorial_effects(df, SMALL, "final_iou")["effect"].tolist())
    with pytest.raises(BadInput, match=r"factor lr: value 0\.001"):
        factorial_effects(df.assign(lr=df["lr"].replace(1e-4, 1e-3)), SMALL, "final_iou")
    with pytest.raises(BadInput, match="iou_epoch3"):
        factorial_effects(df, SMALL, "iou_epoch3")
    with pytest.raises(BadInput, match="exactly 2 levels"):
        factorial_effects(df, {**SMALL, "lr": (1e-4, 2e-4, 3e-4)}, "final_iou")
    with pytest.raises(BadInput, match="img_size"):
        factorial_effects(df, {**SMALL, "img_size": (384, 320)}, "final_iou")


def test_factor_at_one_level_is_aliased_with_intercept() -> None:
    df = _small()
    effects = factorial_effects(df[df["use_ema"]], SMALL, "final_iou")
    assert np.isnan(_row(effects, "use_ema")["effect"])
    assert _row(effects, "use_ema")["aliased_with"] == "intercept"
    assert _row(effects, "lr")["significant"]
    assert "use_ema did not vary in these trials" in verdict(effects, "final_iou")


def test_pure_noise_is_not_called_significant() -> None:
    df = _small().assign(final_iou=np.random.default_rng(11).normal(0.4, 0.01, 16))
    effects = factorial_effects(df, SMALL, "final_iou")
    assert not effects["significant"].any()
    assert "No CI excludes 0" in verdict(effects, "final_iou")


def test_ema_gap_by_factor() -> None:
    df = _small(repeats=4)
    lag = np.where(df["batch_size"] == 16, -0.3, 0.0)
    noise = np.random.default_rng(5).normal(0, 0.01, len(df))
    df = df.assign(val_iou_raw=0.5, val_iou_ema=np.where(df["use_ema"], 0.5 + lag + noise, np.nan))
    gap = ema_gap(df, SMALL)
    assert list(gap.columns) == GAP_COLUMNS
    assert gap.iloc[0]["factor"] == "all" and gap.iloc[0]["n"] == 16  # EMA-off rows left out
    by = gap.set_index(["factor", "level"])
    for level, truth in (("16", -0.3), ("2", 0.0)):
        row = by.loc[("batch_size", level)]
        assert row["n"] == 8 and row["mean_gap"] == pytest.approx(truth, abs=0.015)
        assert row["ci_low"] < row["mean_gap"] < row["ci_high"] < row["ci_low"] + 0.05
    assert ("use_ema", "True") not in by.index
    assert ema_gap(df.assign(use_ema=False), SMALL).empty


def _random_sweep(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    lr = np.exp(rng.uniform(np.log(1e-5), np.log(3e-3), n))
    df = pd.DataFrame({"lr": lr, "batch_size": rng.choice([2, 4, 8, 16], n),
                       "use_ema": rng.choice([False, True], n),
                       "weight_decay": rng.uniform(0, 0.1, n)})
    return df.assign(stop_reason=np.where(lr > 1e-3, "diverged", "completed"))


def test_separating_parameters_finds_planted_lr_threshold() -> None:
    df = _random_sweep()
    sep = separating_parameters(df, ["batch_size", "use_ema", "weight_decay", "lr"])
    assert list(sep.columns) == SEPARATION_COLUMNS
    top = sep.iloc[0]
    assert top["param"] == "lr" and top["kind"] == "numeric (log)"
    assert top["accuracy"] == 1.0 and top["p_value"] < 1e-4 and top["rule"].startswith("lr > ")
    bad = df["stop_reason"] == "diverged"
    assert df.loc[~bad, "lr"].max() < top["threshold"] < df.loc[bad, "lr"].min()
    assert top["median_bad"] > 1e-3 > top["median_other"]
    assert (sep["accuracy"].iloc[1:] < 0.8).all()
    ema = sep.set_index("param").loc["use_ema"]
    assert ema["kind"] == "categorical" and ema["test"] == "fisher"
    n_bad_true = int((bad & df["use_ema"]).sum())
    assert f"True: {n_bad_true}/{int(df['use_ema'].sum())}" in ema["bad_rate_by_value"]


def test_separating_parameters_categorical_and_empty() -> None:
    df = _random_sweep().assign(stop_reason="completed")
    df.loc[df["batch_size"] == 16, "stop_reason"] = "collapsed"
    sep = separating_parameters(df, ["use_ema", "batch_size"])
    assert sep.iloc[0]["param"] == "batch_size" and sep.iloc[0]["accuracy"] == 1.0
    as_choice = separating_parameters(df.assign(batch_size=df["batch_size"].map(str)),
                                      ["batch_size"])
    assert as_choice.iloc[0]["rule"] == "batch_size in {16}"
    assert as_choice.iloc[0]["test"] == "chi-square"
    counts = df.groupby("batch_size").size()
    assert as_choice.iloc[0]["bad_rate_by_value"] == (
        f"2: 0/{counts[2]}, 4: 0/{counts[4]}, 8: 0/{counts[8]}, 16: {counts[16]}/{counts[16]}")

    none_bad = separating_parameters(df.assign(stop_reason="completed"), ["lr"])
    assert none_bad.empty and list(none_bad.columns) == SEPARATION_COLUMNS
    with pytest.raises(BadInput, match="momentum"):
        separating_parameters(df, ["momentum"])


def test_attribution_report_markdown() -> None:
    df = _half_fraction()
    df.loc[df["lr"] == 1e-4, "stop_reason"] = "collapsed"
    df = df.assign(val_iou_raw=df["final_iou"], val_iou_ema=df["final_iou"] - 0.05)
    text = attribution_report(df, LEVELS)
    for heading in ("## Collapse attribution", "### epoch-3 IoU (`iou_epoch3`)",
                    "### final IoU (`final_iou`)", "### EMA weights against raw weights",
                    "### What separates collapsed and diverged trials"):
        assert heading in text
    assert "| lr | -0.2" in text and "| lr | 0.00025 | 0.0001 |" in text
    assert "stop reasons: completed 32, collapsed 32" in text
    # 2.5x apart is not a log-scale span: the cut is the arithmetic midpoint
    assert "| lr | lr < 0.000175 | 1.00 |" in text and "| batch_size | - | 0.50 |" in text
    assert text.count("Lowering the LR") >= 2


def test_ema_text_makes_no_claim_without_a_ci() -> None:
    """One EMA trial: no CI, so no verdict on the lag either way."""
    from camotune.results.attribution_text import _gap_section

    gap = pd.DataFrame([{"factor": "all", "level": "", "n": 1, "mean_ema": 0.5,
                         "mean_raw": 0.5, "mean_gap": 0.0, "ci_low": float("nan"),
                         "ci_high": float("nan")}])
    text = _gap_section(gap, 0.05)[4]
    assert text.endswith("(too few trials for a CI).")
    assert "does not explain" not in text
