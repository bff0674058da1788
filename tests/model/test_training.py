"""Gradients, a falling loss, and the two-stage (frozen / unfrozen backbone) controls."""

from __future__ import annotations

import pytest
import torch

from camotune.model import UNFREEZE_LEVELS, CamoXpert


def _model(**kw: object) -> CamoXpert:
    torch.manual_seed(0)
    return CamoXpert("edgenext_xx_small", pretrained=False, **kw).train()


@pytest.mark.slow
def test_every_trainable_parameter_gets_a_gradient(make_batch, loss_fn) -> None:
    """Level 3, deep supervision on: over a few Adam steps every parameter (routers and all
    experts of every scale included) gets a finite gradient that is non-zero somewhere."""
    model = _model(deep_supervision=True)
    x, mask = make_batch(2, 128)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    touched = {n: False for n, _ in model.named_parameters()}
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model(x), mask).backward()
        for n, p in model.named_parameters():
            assert p.grad is not None, n
            assert torch.isfinite(p.grad).all(), n
            touched[n] |= bool(p.grad.abs().max() > 0)
        opt.step()
    assert [n for n, hit in touched.items() if not hit] == []
    assert any(".router." in n for n in touched)


def test_total_loss_falls_on_a_fixed_batch(make_batch, loss_fn) -> None:
    model = _model(deep_supervision=True)
    x, mask = make_batch(2, 64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = loss_fn(model(x), mask)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_parameter_groups_are_disjoint_and_complete() -> None:
    model = _model()
    bb = {id(p) for p in model.backbone_parameters()}
    head = {id(p) for p in model.head_parameters()}
    assert bb and head and not bb & head
    assert bb | head == {id(p) for p in model.parameters()}
    routers = {id(p) for m in model.moe_layers() for p in m.router.parameters()}
    assert routers <= head


def test_unfreeze_levels_grow_monotonically() -> None:
    model = _model()
    n_backbone = sum(p.numel() for p in model.backbone_parameters())
    counts = []
    for level in range(UNFREEZE_LEVELS + 1):
        model.set_backbone_trainable(level)
        assert model.unfreeze_level == level
        assert all(p.requires_grad for p in model.head_parameters())
        counts.append(sum(p.numel() for p in model.backbone_parameters() if p.requires_grad))
    assert counts[0] == 0 and counts[-1] == n_backbone
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts
    # level 1 is the deepest stage, level 3 includes the stem
    model.set_backbone_trainable(1)
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("stages_3.") for n in trainable)
    model.set_backbone_trainable(2)
    assert not model.backbone.stem_0.weight.requires_grad
    model.set_backbone_trainable(3)
    assert model.backbone.stem_0.weight.requires_grad
    with pytest.raises(ValueError, match="level"):
        model.set_backbone_trainable(UNFREEZE_LEVELS + 1)


def test_frozen_backbone_runs_without_grad_and_in_eval(make_batch, loss_fn) -> None:
    model = _model(deep_supervision=True)
    model.set_backbone_trainable(0)
    model.train()
    assert model.training and not model.backbone.training
    assert all(m.training for m in model.moe_layers())
    seen = []
    hook = model.backbone.register_forward_hook(lambda _m, _i, out: seen.extend(out))
    x, mask = make_batch(2, 32)
    loss_fn(model(x.requires_grad_(True)), mask).backward()
    hook.remove()
    assert seen and not any(f.requires_grad for f in seen)  # no autograd graph in the backbone
    assert all(p.grad is None for p in model.backbone_parameters())
    assert all(p.grad is not None for p in model.head_parameters())
    model.set_backbone_trainable(1)
    assert model.backbone.training  # unfreezing brings train mode back
    model.eval()
    assert not model.backbone.training


def test_partially_frozen_batchnorm_stays_in_eval() -> None:
    """Non-EdgeNeXt backbones with BatchNorm: frozen stages keep their running statistics."""
    torch.manual_seed(0)
    model = CamoXpert("resnet18", pretrained=False).train()
    model.set_backbone_trainable(1)
    bns = {n: m for n, m in model.backbone.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    before = bns["bn1"].running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert not bns["bn1"].training and torch.equal(bns["bn1"].running_mean, before)
    assert bns["layer4.1.bn2"].training
