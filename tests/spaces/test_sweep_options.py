"""Sweep options declared once: the space file's ``sweep:`` section, the flags, the defaults
and every rule come from the fields of `SweepOptions`."""

from __future__ import annotations

import argparse
import dataclasses
import logging

import pytest

from camotune.errors import BadInput
from camotune.spaces import CollapseSettings, SweepOptions, load_space
from camotune.spaces.sweep_options import add_option_arguments, option_fields, resolve

LR = "lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}"


def _space(tmp_path, sweep: str):
    path = tmp_path / "s.yaml"
    path.write_text(f"params: {{{LR}}}\nsweep: {sweep}\n")
    return load_space(str(path))


def test_old_scheduler_key_is_read_with_one_deprecation_line(tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="camotune.spaces.sweep_options")
    space = _space(tmp_path, "{scheduler: fifo}")
    assert space.sweep == {"trial_scheduler": "fifo"}
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["sweep.scheduler is deprecated: write sweep.trial_scheduler "
                     "(the --trial-scheduler flag)"]


def test_new_key_gives_no_warning_and_both_keys_are_refused(tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    assert _space(tmp_path, "{trial_scheduler: fifo}").sweep == {"trial_scheduler": "fifo"}
    assert not caplog.records
    with pytest.raises(BadInput, match=r"sweep\.scheduler: give trial_scheduler only"):
        _space(tmp_path, "{scheduler: fifo, trial_scheduler: asha}")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_option_arguments(parser)
    return parser.parse_args(argv)


def test_flags_over_space_over_defaults() -> None:
    options = resolve(vars(_parse(["--grace-period", "4"])),
                      {"grace_period": 3, "reduction_factor": 4, "collapse_stopper": False})
    got = SweepOptions(**options)
    assert got.grace_period == 4 and got.reduction_factor == 4
    assert got.collapse == CollapseSettings(enabled=False)
    assert got.num_samples == SweepOptions().num_samples == 10
    assert SweepOptions(**resolve(vars(_parse([])), {})) == SweepOptions()


def test_every_rule_is_checked_by_the_field_for_flags_and_space_files(tmp_path) -> None:
    with pytest.raises(BadInput, match=r"^--reduction-factor: must be an integer >= 2 \(got 1\)"):
        SweepOptions(reduction_factor=1)
    with pytest.raises(BadInput, match=r"sweep.reduction_factor: must be an integer >= 2"):
        _space(tmp_path, "{reduction_factor: 1}")
    with pytest.raises(BadInput, match=r"^--cpus-per-trial: must be a number > 0"):
        SweepOptions(cpus_per_trial=0)
    with pytest.raises(BadInput, match=r"^--trial-scheduler: must be asha or fifo"):
        SweepOptions(scheduler="hyperband")
    with pytest.raises(BadInput, match=r"^--collapse-patience: must be an integer >= 1"):
        CollapseSettings(patience=0)


def test_help_shows_each_default() -> None:
    parser = argparse.ArgumentParser()
    add_option_arguments(parser)
    text = parser.format_help()
    for _, f in option_fields():
        if f.default not in (None, "", False) and dataclasses.MISSING is not f.default:
            shown = ("on" if f.default else "off") if isinstance(f.default, bool) else str(f.default)
            assert f"default {shown}" in " ".join(text.split()), f.name
