"""The shipped presets: they load, validate, and say what the issue asks of them."""

from __future__ import annotations

import pytest

from camotune.spaces import list_presets, load_space
from camotune.trainer.config import DEFAULTS

PRESETS = ["default", "seed-collapse", "seed-collapse-small", "smoke"]
SUCCESS = {"batch_size": 2, "accumulation_steps": 4, "lr": 2.5e-4, "use_ema": False,
           "deep_supervision": False}
FAILURE = {"batch_size": 16, "accumulation_steps": 8, "lr": 1e-4, "use_ema": True,
           "deep_supervision": True}


def test_list_presets():
    assert list_presets() == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_every_trial_config_is_valid(name: str):
    space = load_space(name)
    assert space.name == name
    assert len(space.description) > 40
    trials = space.design_trials(7) or space.points
    for params in trials:
        cfg = space.apply(DEFAULTS, params)
        for key, value in {**space.fixed, **params}.items():
            assert getattr(cfg, key) == value


def test_default_preset():
    space = load_space("default")
    assert {"lr", "batch_size", "accumulation_steps", "img_size", "use_ema",
            "deep_supervision"} <= set(space.params)
    assert space.params["lr"].type == "loguniform"
    assert (space.params["lr"].low, space.params["lr"].high) == (1e-5, 3e-3)
    assert space.params["batch_size"].values == (2, 4, 8, 16)
    assert space.fixed["lr_scaling"] == "sqrt" and space.fixed["backbone"] == "edgenext_base"
    assert (space.fixed["epochs"], space.fixed["stage1_epochs"]) == (40, 30)
    control = space.apply(DEFAULTS, space.points[0])
    assert control.img_size == 384 and control.effective_batch(1) == 8
    for key, value in SUCCESS.items():
        assert getattr(control, key) == value
    assert control.resolved_lr(1) == pytest.approx(2.5e-4)  # reference batch: unscaled
    assert space.max_epochs(DEFAULTS) == 40


@pytest.mark.parametrize(("name", "sizes"), [("seed-collapse", (384, 320)),
                                             ("seed-collapse-small", (96, 64))])
def test_seed_collapse_levels_are_success_then_failure(name: str, sizes: tuple[int, int]):
    space = load_space(name)
    levels = space.design.levels
    assert levels["img_size"] == sizes
    for key in SUCCESS:
        assert levels[key] == (SUCCESS[key], FAILURE[key])
    assert space.sweep == {"trial_scheduler": "fifo", "collapse_stopper": False}
    assert space.fixed["lr_scaling"] == "none" and space.fixed["ema_warmup"] is False
    assert space.fixed["ema_decay"] == 0.9999 and space.fixed["warmup_steps"] == 0
    runs = space.design.runs()
    # both of the report's configurations are runs of the half fraction
    assert {**SUCCESS, "img_size": sizes[0]} in runs
    assert {**FAILURE, "img_size": sizes[1]} in runs


def test_seed_collapse_small_is_cpu_sized():
    space = load_space("seed-collapse-small")
    fixed = space.fixed
    assert fixed["backbone"] == "edgenext_xx_small" and fixed["pretrained"] is False
    assert (fixed["epochs"], fixed["stage1_epochs"], fixed["num_workers"]) == (8, 6, 0)
    assert space.design.n_runs * space.design.repeats == 64
    assert load_space("seed-collapse").fixed["backbone"] == "edgenext_base"


def test_seed_collapse_trials_repeat_the_runs_with_seeds():
    space = load_space("seed-collapse")
    trials = space.design_trials(42)
    runs = space.design.runs()
    assert len(trials) == 64
    assert [t["seed"] for t in trials] == [42] * 32 + [43] * 32
    assert [{k: v for k, v in t.items() if k != "seed"} for t in trials] == runs + runs
    assert len({tuple(sorted(t.items())) for t in trials}) == 64


def test_smoke_preset():
    space = load_space("smoke")
    assert space.sweep == {"trial_scheduler": "asha", "grace_period": 2, "reduction_factor": 3,
                           "num_samples": 10, "collapse_min_steps": 40,
                           "collapse_patience_steps": 15}
    cfg = space.apply(DEFAULTS, {"lr": 1e-3, "batch_size": 4, "accumulation_steps": 1,
                                 "use_ema": True, "deep_supervision": False})
    assert (cfg.img_size, cfg.backbone, cfg.pretrained) == (64, "edgenext_xx_small", False)
    assert (cfg.epochs, cfg.stage1_epochs, cfg.full_metrics_every) == (6, 1, 3)
    assert space.max_epochs(DEFAULTS) == 6
    assert space.design is None and space.design_trials(0) == []
