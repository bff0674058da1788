"""The LR schedule: warmup given in optimizer steps or as a fraction of the run."""

from __future__ import annotations

import pytest
import torch

from camotune.errors import BadInput
from camotune.trainer.config import TrainConfig, from_argv
from camotune.trainer.optim import StepSchedule, schedule_factor


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=10, stage1_epochs=4, batch_size=2, accumulation_steps=2)
    base.update(kw)
    return TrainConfig(**base)


def test_warmup_fraction_is_a_share_of_the_whole_runs_optimizer_steps() -> None:
    cfg = _cfg(warmup_fraction=0.1, stage2_batch_size=4)
    n_train = 40  # stage 1: 10 steps an epoch; stage 2: 5 steps an epoch
    assert cfg.optimizer_steps(n_train) == 4 * 10 + 6 * 5 == 70
    assert cfg.warmup_steps_for(n_train) == 7
    assert cfg.warmup_steps == 0  # derived, never written back
    assert _cfg(warmup_steps=12).warmup_steps_for(n_train) == 12
    assert _cfg().warmup_steps_for(n_train) == 0
    assert _cfg(warmup_fraction=1e-4).warmup_steps_for(n_train) == 1  # a fraction > 0 warms up
    assert _cfg(warmup_fraction=0.5).warmup_steps_for(n_train) == 50  # of 10 x 10 steps


def test_the_schedule_ramps_over_the_derived_steps() -> None:
    cfg = _cfg(warmup_fraction=0.25, epochs=4, stage1_epochs=4, min_lr=0.0)
    total = cfg.optimizer_steps(16)  # 4 steps an epoch, 16 in all
    warmup = cfg.warmup_steps_for(16)
    assert (total, warmup) == (16, 4)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [param], "part": "head", "scale": 1.0}], lr=0.0)
    schedule = StepSchedule(opt, total_steps=total, warmup_steps=warmup, kind="cosine",
                            min_lr=0.0)
    schedule.set_stage(1.0, backbone_on=False)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        schedule.step()
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]  # linear to the stage LR over 4 steps
    assert lrs[4] == pytest.approx(1.0) and lrs[-1] < 0.05  # then the cosine down
    assert lrs == [schedule_factor(s, total=16, warmup=4, kind="cosine", min_ratio=0.0)
                   for s in range(16)]


@pytest.mark.parametrize(("argv", "message"), [
    (["--warmup-fraction", "0.1", "--warmup-steps", "5"], "both set"),
    (["--warmup-fraction", "0.6"], "--warmup-fraction"),
    (["--warmup-fraction", "-0.1"], "--warmup-fraction"),
])
def test_bad_warmup_settings_are_bad_input(argv: list[str], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        from_argv(argv)


def test_warmup_fraction_with_zero_steps_is_fine() -> None:
    cfg = from_argv(["--warmup-fraction", "0.2", "--warmup-steps", "0"])
    assert cfg.warmup_fraction == 0.2 and cfg.warmup_steps == 0
