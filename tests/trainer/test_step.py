"""The training step: accumulation equivalence, partial groups, the LR schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from camotune.trainer.optim import StepSchedule, schedule_factor
from camotune.trainer.step import GradientAccumulator, StepStats


class Out:
    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits


class NoNorm(nn.Module):
    """A model without BatchNorm: k micro-batches must equal one batch k times larger."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> Out:
        return Out(self.conv(x))


def mse(out: Out, mask: torch.Tensor):
    loss = ((torch.sigmoid(out.logits) - mask) ** 2).mean()
    return loss, {}


def _trained(micro: int, accumulation: int, images, masks, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    model = NoNorm()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = GradientAccumulator(model, opt, mse, device=torch.device("cpu"), amp_dtype=None,
                      accumulation_steps=accumulation, grad_clip=0.0)
    batches = [(images[i:i + micro], masks[i:i + micro]) for i in range(0, len(images), micro)]
    trainer.run_epoch(batches, StepStats(torch.device("cpu")), n_micro=len(batches))
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_accumulated_micro_batches_equal_one_large_batch(seed: int) -> None:
    images, masks = torch.randn(8, 3, 8, 8), (torch.rand(8, 1, 8, 8) > 0.5).float()
    one_big = _trained(8, 1, images, masks, seed)
    four_small = _trained(2, 4, images, masks, seed)
    assert torch.allclose(one_big, four_small, atol=1e-6)


def test_last_partial_group_is_its_own_step(seed: int) -> None:
    # 5 micro-batches of 2 with accumulation 2: groups of 2, 2 and a last partial 1, which is
    # a step of its own with its loss not divided by 2. Same as batches of 4, 4, 2 unaccumulated.
    images, masks = torch.randn(10, 3, 8, 8), (torch.rand(10, 1, 8, 8) > 0.5).float()

    def run(sizes: list[int], accumulation: int) -> tuple[torch.Tensor, StepStats]:
        torch.manual_seed(seed)
        model = NoNorm()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        trainer = GradientAccumulator(model, opt, mse, device=torch.device("cpu"), amp_dtype=None,
                          accumulation_steps=accumulation, grad_clip=0.0)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        batches = [(images[a:a + n], masks[a:a + n]) for a, n in zip(starts, sizes, strict=True)]
        stats = StepStats(torch.device("cpu"))
        trainer.run_epoch(batches, stats, n_micro=len(batches))
        return torch.cat([p.detach().flatten() for p in model.parameters()]), stats

    got, stats = run([2, 2, 2, 2, 2], accumulation=2)
    want, _ = run([4, 4, 2], accumulation=1)
    assert stats.optimizer_steps == 3 and stats.micro_batches == 5
    assert torch.allclose(got, want, atol=1e-6)


def test_non_finite_loss_is_flagged_without_stopping_the_step(seed: int) -> None:
    model = NoNorm()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def nan_loss(out, mask):
        return out.logits.mean() * float("nan"), {}

    trainer = GradientAccumulator(model, opt, nan_loss, device=torch.device("cpu"), amp_dtype=None,
                      accumulation_steps=1, grad_clip=1.0)
    stats = StepStats(torch.device("cpu"))
    trainer.run_epoch([(torch.randn(2, 3, 8, 8), torch.zeros(2, 1, 8, 8))], stats, n_micro=1)
    assert stats.read()["nonfinite"] is True


@pytest.mark.parametrize("kind", ["cosine", "constant"])
def test_schedule_warms_up_then_decays_per_step(kind: str) -> None:
    values = [schedule_factor(s, total=100, warmup=10, kind=kind, min_ratio=0.01)
              for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    if kind == "cosine":
        assert values[10] == pytest.approx(1.0) and values[-1] == pytest.approx(0.01, abs=1e-3)
        assert all(a >= b for a, b in itertools.pairwise(values[10:]))
    else:
        assert set(values[10:]) == {1.0}


def test_every_group_keeps_its_scale() -> None:
    head, backbone = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([
        {"params": [head], "part": "head", "scale": 1.0, "lr": 0.0},
        {"params": [backbone], "part": "backbone", "scale": 0.1, "lr": 0.0},
    ])
    sched = StepSchedule(opt, total_steps=20, warmup_steps=0, kind="cosine", min_lr=1e-5)
    sched.set_stage(1e-3, backbone_on=False)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 0.0]
    sched.set_stage(2e-3, backbone_on=True)
    for _ in range(7):
        sched.step()
    h, b = (g["lr"] for g in opt.param_groups)
    assert math.isclose(b, 0.1 * h) and h < 2e-3
    state = sched.state_dict()
    other = StepSchedule(opt, total_steps=20, warmup_steps=0, kind="cosine", min_lr=1e-5)
    other.load_state_dict(state)
    other.set_stage(2e-3, backbone_on=True)
    assert opt.param_groups[0]["lr"] == h
