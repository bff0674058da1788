"""The Space API the sweep engine builds on: round trips, apply, Optuna, points."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from camotune.errors import BadInput
from camotune.spaces import Design, Dist, Space, list_presets, load_points, load_space
from camotune.trainer.config import DEFAULTS, TrainConfig

SMALL = {"backbone": "edgenext_xx_small", "pretrained": False, "epochs": 6,
         "stage1_epochs": 4, "img_size": 64}


@pytest.mark.parametrize("name", list_presets())
def test_to_dict_from_dict_round_trip(name: str):
    space = load_space(name)
    data = space.to_dict()
    assert Space.from_dict(data) == space
    # sweep.yaml stores it as YAML; JSON must work too
    assert Space.from_dict(yaml.safe_load(yaml.safe_dump(data, sort_keys=False))) == space
    assert Space.from_dict(json.loads(json.dumps(data))) == space


def test_round_trip_through_a_file(tmp_path):
    space = load_space("default")
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(space.to_dict(), sort_keys=False))
    assert load_space(str(path)) == space


def test_name_comes_from_the_file_or_its_name_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("params: {lr: {type: loguniform, low: 1e-4, high: 1e-2}}\n")
    space = load_space(str(path))
    assert space.name == "mine" and space.origin == str(path)
    assert space.params["lr"] == Dist("loguniform", 1e-4, 1e-2)  # 1e-4 without a dot: a float
    path.write_text("name: other\nparams: {weight_decay: {type: uniform, low: 0, high: 1}}\n")
    other = load_space(str(path))
    assert other.name == "other"
    assert other.params["weight_decay"].low == 0.0
    assert isinstance(other.params["weight_decay"].low, float)


def test_apply_lays_fixed_then_params_over_the_base():
    space = Space("t", params={"lr": Dist("loguniform", 1e-4, 1e-2),
                               "batch_size": Dist("choice", values=[4, 8])},
                  fixed={**SMALL, "weight_decay": 0})
    base = TrainConfig(seed=5, img_size=128)
    cfg = space.apply(base, {"lr": 3e-3, "batch_size": 8})
    assert (cfg.lr, cfg.batch_size, cfg.seed, cfg.img_size) == (3e-3, 8, 5, 64)
    assert cfg.weight_decay == 0.0 and isinstance(cfg.weight_decay, float)
    assert space.apply(base, {"img_size": 96}).img_size == 96  # params win over fixed
    assert space.max_epochs(base) == 6


def test_apply_converts_numpy_scalars():
    space = load_space("smoke")
    cfg = space.apply(DEFAULTS, {"lr": np.float64(1e-3), "batch_size": np.int64(8),
                                 "use_ema": np.bool_(True), "accumulation_steps": np.int32(2)})
    assert type(cfg.lr) is float and type(cfg.batch_size) is int
    assert cfg.use_ema is True and cfg.accumulation_steps == 2
    assert cfg.epochs == 6


@pytest.mark.parametrize(("params", "match"), [
    ({"img_size": 100}, r"^space 'smoke': --img-size must be a multiple of 32"),
    ({"nope": 1}, r"^space 'smoke': unknown TrainConfig field"),
    ({"batch_size": 2.5}, r"^space 'smoke': --batch-size must be an integer"),
])
def test_apply_rejects_bad_params(params, match):
    preset = load_space("smoke")
    space = Space("smoke", params=preset.params, fixed=preset.fixed)  # no origin: named by name
    with pytest.raises(BadInput, match=match):
        space.apply(DEFAULTS, params)


def test_optuna_distributions():
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
    )

    dists = load_space("default").optuna_distributions()
    assert dists["lr"] == FloatDistribution(1e-5, 3e-3, log=True)
    assert dists["weight_decay"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert dists["warmup_fraction"] == FloatDistribution(0.0, 0.05)
    assert dists["batch_size"] == CategoricalDistribution([2, 4, 8, 16])
    assert dists["use_ema"] == CategoricalDistribution([True, False])
    assert set(dists) == set(load_space("default").params)
    uniform = Space("u", params={"weight_decay": Dist("uniform", 0.0, 0.1)})
    assert uniform.optuna_distributions()["weight_decay"] == FloatDistribution(0.0, 0.1)
    assert load_space("seed-collapse").optuna_distributions() == {}


def test_design_trials_seeds_and_order():
    space = Space("d", design=Design({"lr": (1e-3, 1e-2), "use_ema": (False, True)},
                                     repeats=3), fixed=SMALL)
    trials = space.design_trials(10)
    assert len(trials) == 12
    assert trials[:4] == [{"lr": 1e-3, "use_ema": False, "seed": 10},
                          {"lr": 1e-2, "use_ema": False, "seed": 10},
                          {"lr": 1e-3, "use_ema": True, "seed": 10},
                          {"lr": 1e-2, "use_ema": True, "seed": 10}]
    assert [t["seed"] for t in trials] == [10] * 4 + [11] * 4 + [12] * 4
    assert space.searched == ("lr", "use_ema", "seed")
    assert space.apply(DEFAULTS, trials[-1]).seed == 12
    with pytest.raises(BadInput, match="base seed"):
        space.design_trials(-1)


def test_dist_contains():
    assert Dist("loguniform", 1e-4, 1e-2).contains(1e-2)
    assert not Dist("loguniform", 1e-4, 1e-2).contains(2e-2)
    assert Dist("int", 0, 5).contains(5) and not Dist("int", 0, 5).contains(2.5)
    assert not Dist("int", 0, 5).contains(True)
    assert Dist("choice", values=[1, 2]).contains(2) and not Dist("choice", values=[1]).contains(True)
    assert not Dist("choice", values=[True, False]).contains(1)


def test_direct_construction_validates_and_names_the_space():
    with pytest.raises(BadInput, match=r"^space 'x': params\.epochs: epochs cannot be searched"):
        Space("x", params={"epochs": Dist("int", 2, 10)})
    with pytest.raises(BadInput, match=r"^low must be < high"):
        Dist("uniform", 1.0, 0.5)


def _points_file(tmp_path, text: str) -> str:
    path = tmp_path / "points.yaml"
    path.write_text(text)
    return str(path)


def test_load_points(tmp_path):
    space = load_space("smoke")
    path = _points_file(tmp_path, "- {lr: 1e-3, batch_size: 4}\n"
                                  "- {lr: 0.002, use_ema: false, accumulation_steps: 2}\n")
    assert load_points(path, space) == [{"lr": 1e-3, "batch_size": 4},
                                        {"lr": 0.002, "use_ema": False, "accumulation_steps": 2}]


@pytest.mark.parametrize(("text", "key"), [
    ("{lr: 1.0e-3}\n", "expected a non-empty YAML list"),
    ("[]\n", "expected a non-empty YAML list"),
    ("- {lr: 1.0e-3}\n- [1, 2]\n", "[1]"),
    ("- {lr: 1.0e-3, img_size: 64}\n", "[0].img_size: not a searched parameter"),
    ("- {lr: 1.0e-3, learning_rate: 1}\n", "[0].learning_rate: unknown TrainConfig field"),
    ("- {lr: 1.0}\n", "[0].lr: 1.0 lies outside loguniform"),
    ("- {batch_size: 32}\n", "[0].batch_size: 32 lies outside choice"),
    ("- {use_ema: 1}\n", "[0].use_ema: 1 lies outside choice"),
    ("- {lr: [1\n", "not valid YAML"),
])
def test_load_points_errors(tmp_path, text: str, key: str):
    path = _points_file(tmp_path, text)
    with pytest.raises(BadInput) as err:
        load_points(path, load_space("smoke"))
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and key in msg and "\n" not in msg


def test_load_points_refuses_a_design_space(tmp_path):
    path = _points_file(tmp_path, "- {lr: 1.0e-3}\n")
    with pytest.raises(BadInput, match="is a design"):
        load_points(path, load_space("seed-collapse-small"))


def test_unknown_space_name():
    with pytest.raises(BadInput, match=r"'nonesuch' is neither a preset \(default, "):
        load_space("nonesuch")
    with pytest.raises(BadInput, match=r"^cannot read missing\.yaml"):
        load_space("missing.yaml")
