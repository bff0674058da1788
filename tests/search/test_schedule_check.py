"""The up-front warnings about ASHA rungs that judge trials mid-warmup or only in stage 1,
on spaces whose figures are worked out by hand, and the rung options."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from camotune.errors import BadInput
from camotune.search.schedule_check import (
    schedule_figures,
    schedule_warnings,
    warmup_end_epoch,
    warn_schedule,
)
from camotune.search.settings import SweepSettings
from camotune.spaces import Space, load_space
from camotune.spaces.sweep_options import resolve
from camotune.trainer.config import DEFAULTS

N_TRAIN = 3636  # the 4,040 training images less the 10% validation hold-out

OLD_DEFAULT = {
    "params": {"batch_size": {"type": "choice", "values": [2, 4, 8, 16]},
               "accumulation_steps": {"type": "choice", "values": [1, 2, 4, 8]},
               "warmup_steps": {"type": "int", "low": 0, "high": 500}},
    "fixed": {"epochs": 40, "stage1_epochs": 30},
}


def settings_for(space: Space, **options) -> SweepSettings:
    opts = resolve({}, {**space.sweep, **options})
    return SweepSettings(name="s", storage_path="/tmp", space=space, space_source="t",
                         base=DEFAULTS, **opts)


def test_warmup_end_in_epochs() -> None:
    cfg = DEFAULTS.__class__(batch_size=16, accumulation_steps=8, warmup_steps=500, epochs=40,
                             stage1_epochs=30)
    # ceil(ceil(3636 / 16) / 8) = 29 steps an epoch: 500 steps end in epoch 17.2
    assert warmup_end_epoch(cfg, N_TRAIN) == pytest.approx(500 / 29)
    small = DEFAULTS.__class__(batch_size=2, accumulation_steps=1, warmup_steps=500)
    assert warmup_end_epoch(small, N_TRAIN) == pytest.approx(500 / 1818)


def test_old_default_rungs_warn_mid_warmup_and_stage_1() -> None:
    space = Space.from_dict({**OLD_DEFAULT, "params": {
        **OLD_DEFAULT["params"], "stage2_lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3}}},
        name="old")
    settings = settings_for(space)
    assert settings.rung_epochs == [2, 6, 18]
    figures = schedule_figures(settings, N_TRAIN)
    assert figures.warmup_end == (0.0, pytest.approx(500 / 29))
    lines = schedule_warnings(figures, 40)
    assert len(lines) == 2
    assert "rung(s) at epoch 2, 6 fall before the LR warmup" in lines[0]
    assert "17.2" in lines[0]
    assert "falls in stage 1 (epochs 1-30" in lines[1] and "stage2_lr" in lines[1]


def test_every_rung_before_every_warmup_end() -> None:
    space = Space.from_dict({**OLD_DEFAULT, "params": {
        "batch_size": {"type": "choice", "values": [8, 16]},
        "accumulation_steps": {"type": "choice", "values": [8]},
        "warmup_steps": {"type": "int", "low": 400, "high": 500}}}, name="late")
    figures = schedule_figures(settings_for(space, rungs=[1, 2]), N_TRAIN)
    # 57 steps an epoch at effective batch 64: 400 steps end in epoch 7.0
    assert figures.warmup_end == (pytest.approx(400 / 57), pytest.approx(500 / 29))
    lines = schedule_warnings(figures, 40)
    assert lines and lines[0].startswith("every ASHA rung (epochs 1, 2) falls before every")


def test_the_default_preset_warns_of_nothing() -> None:
    settings = settings_for(load_space("default"))
    assert settings.rung_epochs == [4, 12, 32] and settings.rung_metric == "best"
    figures = schedule_figures(settings, N_TRAIN)
    assert figures.warmup_end[1] <= 2.0 + 1e-9
    assert schedule_warnings(figures, 40) == []


def test_warning_is_logged_before_ray(synth_dataset: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    space = Space.from_dict({**OLD_DEFAULT, "fixed": {"epochs": 6, "stage1_epochs": 1}},
                            name="w")
    settings = SweepSettings(name="s", storage_path="/tmp", space=space, space_source="t",
                             base=DEFAULTS.__class__(dataset_path=str(synth_dataset)),
                             **resolve({}, {}))
    with caplog.at_level(logging.WARNING):
        lines = warn_schedule(settings)
    assert lines and lines[0] in caplog.text


def test_rung_options_are_checked() -> None:
    space = Space.from_dict(OLD_DEFAULT, name="r")
    with pytest.raises(BadInput, match=r"--rungs: rung 50 exceeds the trials' 40 epochs"):
        settings_for(space, rungs=[4, 50]).check_rungs()
    with pytest.raises(BadInput, match=r"--brackets 3: more brackets than rungs \(4, 12\)"):
        settings_for(space, rungs=[4, 12], brackets=3).check_rungs()
    with pytest.raises(BadInput, match=r"--rungs: must be a list of increasing integers"):
        settings_for(space, rungs=[12, 4])
    with pytest.raises(BadInput, match=r"sweep.rungs: rung 50 exceeds fixed.epochs \(40\)"):
        Space.from_dict({**OLD_DEFAULT, "sweep": {"rungs": [4, 50]}}, name="r")


def test_rungs_flag(tmp_path: Path) -> None:
    from camotune.commands.sweep import sweep_parser

    args = sweep_parser().parse_args(["--space", "smoke", "--rungs", "4,12,36",
                                      "--rung-metric", "last", "--brackets", "2",
                                      "--collapse-min-steps", "5"])
    assert args.rungs == [4, 12, 36] and args.rung_metric == "last" and args.brackets == 2
    assert args.collapse_min_steps == 5
