"""A good and a bad TrainConfig -> factors, shortened schedules and a design holding both
corners (balanced, resolution >= V checked from the runs themselves)."""

from __future__ import annotations

import dataclasses
from itertools import combinations

import pytest

from camotune.errors import BadInput
from camotune.spaces.design import Design
from camotune.spaces.pair import NOT_FACTORS, pair_factors, shorten
from camotune.spaces.pair_design import choose_design, design_pair
from camotune.trainer.config import RUNTIME_FIELDS, TrainConfig

GOOD = TrainConfig(batch_size=2, accumulation_steps=4, lr=2.5e-4, img_size=384, use_ema=False,
                   deep_supervision=False, checkpoint_dir="runs/good", num_workers=4, seed=1)
BAD = TrainConfig(batch_size=16, accumulation_steps=8, lr=1e-4, img_size=320, use_ema=True,
                  deep_supervision=True, checkpoint_dir="runs/bad", num_workers=0, seed=7,
                  dataset_path="/elsewhere", threads=2)
REPORT_FIELDS = ["deep_supervision", "batch_size", "accumulation_steps", "img_size", "lr",
                 "use_ema"]


def _names(k: int) -> list[str]:
    return [f"f{i}" for i in range(k)]


def _defining_words(coded: list[dict[str, int]]) -> list[tuple[str, ...]]:
    """Every product of factor columns that is constant over the runs: the defining relation,
    read off the runs rather than taken from the generator table."""
    names = list(coded[0])
    words = []
    for order in range(1, len(names) + 1):
        for word in combinations(names, order):
            values = set()
            for row in coded:
                sign = 1
                for name in word:
                    sign *= row[name]
                values.add(sign)
            if len(values) == 1:
                words.append(word)
    return words


# -- factors --------------------------------------------------------------------------------
def test_factors_are_the_differing_fields_without_run_time_ones():
    factors = pair_factors(GOOD, BAD)
    assert [f.name for f in factors] == REPORT_FIELDS
    assert RUNTIME_FIELDS <= NOT_FACTORS and {"dataset_path", "seed"} <= NOT_FACTORS
    lr = next(f for f in factors if f.name == "lr")
    assert lr.to_dict() == {"name": "lr", "fields": ["lr"], "good": 2.5e-4, "bad": 1e-4}


def test_a_group_is_one_factor_with_both_values():
    factors = pair_factors(GOOD, BAD, group=[("batch_size", "accumulation_steps")])
    names = [f.name for f in factors]
    assert names == ["deep_supervision", "batch_size+accumulation_steps", "img_size", "lr",
                     "use_ema"]
    grouped = factors[1]
    assert grouped.values("good") == {"batch_size": 2, "accumulation_steps": 4}
    assert grouped.to_dict()["bad"] == {"batch_size": 16, "accumulation_steps": 8}


@pytest.mark.parametrize(("group", "words"), [
    ([("batch_size", "nope")], "not a TrainConfig field"),
    ([("batch_size", "checkpoint_dir")], "run-time setting"),
    ([("batch_size", "weight_decay")], "same in both runs"),
    ([("batch_size", "lr"), ("lr", "img_size")], "more than one group"),
    ([("batch_size",)], "at least two fields"),
])
def test_bad_groups_say_why(group, words):
    with pytest.raises(BadInput, match=words):
        pair_factors(GOOD, BAD, group=group)


def test_runs_that_differ_only_in_run_time_fields_have_no_factor():
    other = dataclasses.replace(GOOD, checkpoint_dir="x", device="cpu", num_workers=0, seed=3)
    with pytest.raises(BadInput, match="differ in no training setting"):
        pair_factors(GOOD, other)


# -- shortening -----------------------------------------------------------------------------
@pytest.mark.parametrize(("epochs", "stage1"), [(12, 3), (6, 2), (4, 1), (2, 1), (120, 30)])
def test_shorten_scales_the_stage_split_and_keeps_two_stages(epochs, stage1):
    cfg = shorten(GOOD, epochs)  # 120 epochs, 30 in stage 1
    assert (cfg.epochs, cfg.stage1_epochs) == (epochs, stage1)
    assert cfg.stage2_epochs >= 1


def test_shorten_keeps_one_stage_runs_one_stage_and_refuses_one_epoch_for_two():
    assert shorten(dataclasses.replace(GOOD, stage1_epochs=120), 5).stage1_epochs == 5
    assert shorten(dataclasses.replace(GOOD, stage1_epochs=0), 5).stage1_epochs == 0
    with pytest.raises(BadInput, match="both stages"):
        shorten(GOOD, 1)


def test_shortening_both_alike_keeps_schedule_fields_out_of_the_factors():
    bad = dataclasses.replace(BAD, epochs=40, stage1_epochs=10)  # same 1:3 split, other length
    assert "epochs" in [f.name for f in pair_factors(GOOD, bad)]
    pair = design_pair(GOOD, bad, epochs=8)
    assert "epochs" not in [f.name for f in pair.factors]
    assert all((r.config.epochs, r.config.stage1_epochs) == (8, 2) for r in pair.runs)


# -- the design -----------------------------------------------------------------------------
def test_full_factorial_when_affordable_with_every_run_configured():
    pair = design_pair(GOOD, BAD, seeds=(0, 1, 2), max_runs=64, epochs=4)
    assert pair.design.fraction == 1 and pair.resolution is None and not pair.extra_good_corner
    assert len(pair.runs) == 64 and pair.n_trials == 192
    assert pair.aliases() == {}
    bad_corner = next(r for r in pair.runs if set(r.levels.values()) == {"bad"})
    good_corner = next(r for r in pair.runs if set(r.levels.values()) == {"good"})
    for name in REPORT_FIELDS:
        assert getattr(bad_corner.config, name) == getattr(BAD, name)
        assert getattr(good_corner.config, name) == getattr(GOOD, name)
    assert bad_corner.config.checkpoint_dir == GOOD.checkpoint_dir  # run-time fields: the good run's
    trials = pair.trials()
    assert [t[1] for t in trials[:64]] == [0] * 64 and {t[2].seed for t in trials} == {0, 1, 2}


def test_half_fraction_of_six_is_balanced_per_seed_holds_both_corners_and_is_resolution_vi():
    pair = design_pair(GOOD, BAD, seeds=(0, 1), max_runs=40)
    assert pair.design.fraction == 2 and len(pair.runs) == 32 and not pair.extra_good_corner
    for seed in pair.seeds:
        coded = [pair.runs[i].coded for i, s, _ in pair.trials() if s == seed]
        for name in REPORT_FIELDS:
            assert sum(row[name] for row in coded) == 0
    coded = [r.coded for r in pair.runs]
    assert {-1} in [set(r.values()) for r in coded] and {1} in [set(r.values()) for r in coded]
    words = _defining_words(coded)
    assert [len(w) for w in words] == [6] and pair.resolution == 6
    aliases = pair.aliases()
    assert aliases["batch_size:lr"] == ["deep_supervision:accumulation_steps:img_size:use_ema"]
    assert pair.summary()["design"]["resolution"] == 6


@pytest.mark.parametrize("k", [5, 7])
def test_odd_k_half_fraction_of_resolution_v_lacks_the_good_corner(k):
    design = Design({n: ("good", "bad") for n in _names(k)}, 2)
    assert design.resolution >= 5
    signs = [set(row.values()) for row in design.coded()]
    assert {1} in signs and {-1} not in signs


def test_odd_k_gets_the_full_factorial_or_the_good_corner_as_an_extra_run():
    design, extra = choose_design(_names(5), max_runs=32)
    assert design.fraction == 1 and not extra
    design, extra = choose_design(_names(5), max_runs=20)
    assert design.fraction == 2 and extra
    pair = design_pair(GOOD, BAD, group=[("batch_size", "accumulation_steps")], max_runs=20)
    assert len(pair.runs) == 17 and pair.extra_good_corner
    assert set(pair.runs[-1].levels.values()) == {"good"}
    fraction = [r.coded for r in pair.runs[:-1]]
    for name in fraction[0]:
        assert sum(row[name] for row in fraction) == 0
    assert min(len(w) for w in _defining_words(fraction)) >= 5
    assert any(set(r.values()) == {1} for r in fraction)


def test_eight_factors_pick_the_fewest_runs_of_resolution_v():
    design, extra = choose_design(_names(8), max_runs=128)
    # the quarter fraction (resolution V) plus the good corner, 65 runs, beats the half (128)
    assert (design.fraction, design.resolution, extra) == (4, 5, True)


def test_nothing_fits_names_the_smallest_run_count():
    with pytest.raises(BadInput, match="at least 65 runs"):
        choose_design(_names(8), max_runs=64)
    with pytest.raises(BadInput, match="at least 16 runs"):
        choose_design(_names(4), max_runs=8)  # no resolution-V fraction of 4 factors


def test_a_combination_trainconfig_rejects_fails_naming_the_run():
    good = TrainConfig(num_experts=2, top_k=1)
    bad = TrainConfig(num_experts=7, top_k=4)
    # the run with top_k at its bad level (4) and num_experts at its good one (2) is invalid
    with pytest.raises(BadInput, match=r"design run 3 \(bad levels: top_k\).*--top-k"):
        design_pair(good, bad)


def test_bad_seeds_and_max_runs():
    for seeds in ((), (1, 1), (-1,)):
        with pytest.raises(BadInput, match="--seeds"):
            design_pair(GOOD, BAD, seeds=seeds)
    with pytest.raises(BadInput, match="max runs"):
        choose_design(_names(3), max_runs=0)
