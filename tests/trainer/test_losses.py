"""CamoLoss: finite terms, gradients, deep supervision, no host sync, and it trains."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from camotune.trainer.config import TrainConfig
from camotune.trainer.losses import CamoLoss, loss_from_config, sobel_magnitude, soft_iou_loss


def _mask(b: int = 2, size: int = 32) -> torch.Tensor:
    m = torch.zeros(b, 1, size, size)
    m[:, :, 8:24, 10:20] = 1.0
    return m


def _out(b: int = 2, size: int = 32, deep: bool = True, grad: bool = True) -> SimpleNamespace:
    logits = torch.randn(b, 1, size, size, requires_grad=grad)
    maps = [torch.randn(b, 1, size // s, size // s, requires_grad=grad) for s in (16, 8, 4)]
    aux = torch.tensor(0.7, requires_grad=grad)
    return SimpleNamespace(logits=logits, deep=maps if deep else [], aux_loss=aux)


def test_total_and_terms_are_finite_and_consistent(seed: int) -> None:
    out, mask = _out(), _mask()
    loss = CamoLoss()
    total, terms = loss(out, mask)
    assert total.shape == () and total.requires_grad
    assert set(terms) == {"bce", "iou", "edge", "deep", "aux", "total"}
    for name, value in terms.items():
        assert value.shape == () and not value.requires_grad, name
        assert torch.isfinite(value), name
    expected = (2.0 * terms["bce"] + 1.5 * terms["iou"] + 1.0 * terms["edge"]
                + 0.4 * terms["deep"] + 0.1 * terms["aux"])
    torch.testing.assert_close(terms["total"], expected)
    torch.testing.assert_close(total.detach(), expected)
    torch.testing.assert_close(terms["aux"], torch.tensor(0.7))


def test_gradient_reaches_logits_deep_maps_and_aux(seed: int) -> None:
    out, mask = _out(), _mask()
    total, _ = CamoLoss()(out, mask)
    total.backward()
    for t in [out.logits, *out.deep, out.aux_loss]:
        assert t.grad is not None and torch.isfinite(t.grad).all()
        assert t.grad.abs().sum() > 0


def test_deep_term_only_with_deep_maps(seed: int) -> None:
    _, terms = CamoLoss()(_out(deep=False), _mask())
    assert "deep" not in terms
    _, terms = CamoLoss()(_out(deep=True), _mask())
    assert "deep" in terms


def test_deep_term_is_bce_iou_of_upsampled_maps(seed: int) -> None:
    out, mask = _out(), _mask()
    loss = CamoLoss(bce_weight=1.0, iou_weight=1.0)
    _, terms = loss(out, mask)
    per_map = []
    for d in out.deep:
        up = nn.functional.interpolate(d.detach(), size=(32, 32), mode="bilinear",
                                       align_corners=False)
        per_map.append(nn.functional.binary_cross_entropy_with_logits(up, mask)
                       + soft_iou_loss(torch.sigmoid(up), mask))
    torch.testing.assert_close(terms["deep"], torch.stack(per_map).mean())


def test_all_zero_mask_is_finite_with_finite_gradient() -> None:
    mask = torch.zeros(2, 1, 16, 16)
    # very confident background prediction: flat probability map, the sqrt's worst case
    logits = torch.full((2, 1, 16, 16), -30.0, requires_grad=True)
    total, terms = CamoLoss()(SimpleNamespace(logits=logits, deep=[], aux_loss=None), mask)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(logits.grad).all()
    assert terms["iou"] < 1e-6 and terms["edge"] < 1e-6
    assert "aux" not in terms


def test_soft_iou_and_edge_on_known_inputs() -> None:
    mask = _mask(1)
    assert soft_iou_loss(mask, mask) == 0
    # a unit vertical step has Sobel magnitude 1 on the two columns beside it
    step = torch.zeros(1, 1, 8, 8)
    step[..., 4:] = 1.0
    mag = sobel_magnitude(step)
    torch.testing.assert_close(mag[0, 0, :, 3:5], torch.ones(8, 2), atol=1e-3, rtol=0)
    assert mag[0, 0, :, :3].max() < 1e-2 and mag[0, 0, :, 5:].max() < 1e-2


def test_no_host_sync_in_the_call(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    out, mask = _out(), _mask()
    loss = CamoLoss()

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("host sync in the loss")

    for name in ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    total, _ = loss(out, mask)
    monkeypatch.undo()
    assert torch.isfinite(total)


def test_autocast_gives_float32_and_the_same_value(seed: int) -> None:
    out, mask = _out(grad=False), _mask()
    loss = CamoLoss()
    ref, _ = loss(out, mask)
    half = SimpleNamespace(logits=out.logits.bfloat16(), deep=[d.bfloat16() for d in out.deep],
                           aux_loss=out.aux_loss)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, terms = loss(half, mask)
    assert total.dtype == torch.float32 and terms["edge"].dtype == torch.float32
    torch.testing.assert_close(total, ref, rtol=2e-2, atol=2e-2)  # only the bf16 inputs differ


def test_loss_falls_on_a_fixed_batch(seed: int) -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
    x = torch.randn(2, 3, 32, 32)
    mask = (x[:, :1] > 0.3).float()  # learnable from the input
    loss = CamoLoss()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    values = []
    for _ in range(30):
        total, _ = loss(SimpleNamespace(logits=net(x), deep=[], aux_loss=None), mask)
        opt.zero_grad()
        total.backward()
        opt.step()
        values.append(total.item())
    assert values[-1] < 0.6 * values[0]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="bce_weight"):
        CamoLoss(bce_weight=-1.0)
    with pytest.raises(ValueError, match="differ"):
        CamoLoss()(_out(size=32), _mask(size=16))


def test_loss_from_config_uses_deep_weight_only_with_deep_supervision() -> None:
    cfg = TrainConfig(backbone="edgenext_xx_small", bce_weight=1.0, iou_weight=0.5,
                      edge_weight=0.25, aux_weight=0.0, deep_supervision_weight=0.3)
    loss = loss_from_config(cfg)
    assert (loss.bce_weight, loss.iou_weight, loss.edge_weight, loss.aux_weight) == (
        1.0, 0.5, 0.25, 0.0)
    assert loss.deep_supervision_weight == 0.0
    loss = loss_from_config(dataclasses.replace(cfg, deep_supervision=True))
    assert loss.deep_supervision_weight == 0.3
