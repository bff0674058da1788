"""Routing, the load-balancing loss, the experts, and the absence of host syncs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from camotune.model import CamoXpert
from camotune.model.blocks import num_heads
from camotune.model.experts import (
    KINDS,
    EdgeExpert,
    FrequencyExpert,
    WindowAttentionExpert,
    expert_kinds,
)
from camotune.model.moe import MoELayer, load_balance_loss


@pytest.fixture(scope="module")
def model() -> CamoXpert:
    torch.manual_seed(0)
    return CamoXpert("edgenext_xx_small", deep_supervision=True, pretrained=False)


def test_load_balance_loss_is_one_when_balanced_and_e_over_k_when_collapsed() -> None:
    e, k = 7, 2
    uniform = torch.full((4, e, 3, 3), 1 / e)
    chosen = torch.zeros(4, e, 3, 3)
    chosen[:, :k] = 1  # ties: any choice gives 1 for uniform probabilities
    assert load_balance_loss(uniform, chosen, k).item() == pytest.approx(1.0)
    collapsed = torch.zeros(4, e, 3, 3)
    collapsed[:, 0] = 1.0
    assert load_balance_loss(collapsed, chosen, k).item() == pytest.approx(e / k)


def _drive(layer: MoELayer, bias: torch.Tensor) -> None:
    """Make the router's output depend only on ``bias``."""
    with torch.no_grad():
        layer.router.local.weight.zero_()
        layer.router.context.weight.zero_()
        layer.router.local.bias.copy_(bias)


def test_aux_loss_smallest_for_balanced_routing_via_the_router() -> None:
    torch.manual_seed(0)
    layer = MoELayer(32, num_experts=7, top_k=2)
    x = torch.randn(2, 32, 6, 6)
    _drive(layer, torch.zeros(7))
    _, balanced = layer(x)
    _drive(layer, torch.tensor([8.0, 0, 0, 0, 0, 0, 0]))
    _, collapsed = layer(x)
    torch.manual_seed(1)
    layer.router.local.reset_parameters()
    _, learnt = layer(x)
    assert balanced.item() == pytest.approx(1.0, abs=1e-6)
    assert collapsed.item() > 3.0  # approaches E / k = 3.5
    assert balanced.item() < learnt.item() < collapsed.item()


def test_aux_loss_gradient_reaches_every_router(model: CamoXpert) -> None:
    out = model(torch.randn(2, 3, 64, 64))
    routers = [m.router for m in model.moe_layers()]
    params = [p for r in routers for p in r.parameters()]
    grads = torch.autograd.grad(out.aux_loss, params)
    assert all(torch.isfinite(g).all() for g in grads)
    per_router = [sum(g.abs().sum() for g in grads[i * 3 : i * 3 + 3]) for i in range(len(routers))]
    assert all(s > 0 for s in per_router), per_router


def test_routing_is_top_k_and_sparse(model: CamoXpert) -> None:
    layer = model.moe_layers()[1]
    weights, probs, chosen = layer.router(torch.randn(2, 64, 8, 8))
    assert torch.equal((weights > 0).sum(dim=1), torch.full((2, 8, 8), 2))
    assert torch.allclose(weights.sum(dim=1), torch.ones(2, 8, 8))
    assert torch.allclose(probs.sum(dim=1), torch.ones(2, 8, 8))
    assert torch.equal(chosen, (weights > 0).float())


def test_batch_is_processed_independently(model: CamoXpert) -> None:
    """The vectorised routing gives each image what it would get alone."""
    model.eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        together = model(x)
        alone = [model(x[i : i + 1]) for i in range(3)]
    model.train()
    torch.testing.assert_close(together.logits, torch.cat([a.logits for a in alone]),
                               rtol=1e-4, atol=1e-4)


def test_no_host_sync_in_forward(model: CamoXpert, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any Python-level device-to-host read in forward (``.item()``, ``if tensor:``,
    ``.tolist()``, ``.cpu()``, ``int(t)``, ``nonzero``) raises."""

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("host sync in forward")

    for name in ("item", "__bool__", "tolist", "cpu", "numpy", "__int__", "__float__",
                 "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    monkeypatch.setattr(torch, "nonzero", boom)
    with pytest.raises(AssertionError, match="host sync"):
        bool(torch.ones(1))  # the trap is armed
    out = model(torch.randn(2, 3, 64, 64))
    monkeypatch.undo()
    assert out.logits.shape == (2, 1, 64, 64)


def test_expert_kinds_cycle() -> None:
    assert expert_kinds(7) == list(KINDS)
    assert expert_kinds(9) == [*KINDS, KINDS[0], KINDS[1]]
    assert expert_kinds(3) == list(KINDS[:3])


def test_num_heads_handles_awkward_widths() -> None:
    assert num_heads(64) == 2
    assert num_heads(96) == 3
    assert num_heads(100) == 2  # not divisible by 8, 4 or 3 with wide enough heads
    assert num_heads(256) == 8
    assert num_heads(100, min_head_dim=8) == 5
    assert num_heads(7) == 1


def _naive_window_attention(ex: WindowAttentionExpert, x: torch.Tensor) -> torch.Tensor:
    """Reference: attention over each window's real (unpadded) tokens, one window at a time."""
    b, c, h, w = x.shape
    qkv = ex.qkv(ex.norm(x + ex.pos(x)))
    out = torch.zeros(b, c, h, w)
    hd = c // ex.heads
    for i in range(0, h, ex.window):
        for j in range(0, w, ex.window):
            t = qkv[:, :, i : i + ex.window, j : j + ex.window]
            th, tw = t.shape[-2:]
            q, k, v = t.reshape(b, 3, ex.heads, hd, th * tw).permute(1, 0, 2, 4, 3).unbind(0)
            o = F.softmax(q @ k.transpose(-1, -2) / hd**0.5, dim=-1) @ v
            out[:, :, i : i + th, j : j + tw] = o.permute(0, 1, 3, 2).reshape(b, c, th, tw)
    return ex.proj(out)


@pytest.mark.parametrize("hw", [(16, 16), (12, 10), (3, 5)])
def test_window_attention_matches_reference(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    ex = WindowAttentionExpert(64, window=8)
    assert ex.heads == 2
    x = torch.randn(2, 64, *hw)
    with torch.no_grad():
        torch.testing.assert_close(ex(x), _naive_window_attention(ex, x), rtol=1e-4, atol=1e-5)


def test_frequency_expert_with_unit_gain_is_identity_before_mixing() -> None:
    ex = FrequencyExpert(8)
    with torch.no_grad():
        ex.gain.fill_(1.0)
    ex.out = torch.nn.Identity()
    x = torch.randn(2, 8, 9, 14)
    torch.testing.assert_close(ex(x), x, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        ex.gain.zero_()
        ex.gain[:, 0] = 1.0  # keep only the lowest band: the output is smoother than the input
    y = ex(x)
    assert y.diff(dim=-1).abs().mean() < 0.5 * x.diff(dim=-1).abs().mean()


def test_edge_expert_starts_as_sobel() -> None:
    ex = EdgeExpert(4)
    ex.out = torch.nn.Identity()
    ramp = torch.arange(10.0).repeat(10, 1)[None, None].repeat(1, 4, 1, 1)  # d/dx = 1
    mag = ex(ramp)[..., 1:-1, 1:-1]
    torch.testing.assert_close(mag, torch.ones_like(mag), rtol=1e-3, atol=1e-3)


def test_bad_top_k_is_bad_input() -> None:
    from camotune.errors import BadInput

    with pytest.raises(BadInput, match="--top-k"):
        CamoXpert("edgenext_xx_small", num_experts=2, top_k=3, pretrained=False)
    with pytest.raises(BadInput, match="--backbone"):
        CamoXpert("not_a_model", pretrained=False)
