"""Output shapes and the typed result for every EdgeNeXt variant."""

from __future__ import annotations

import pytest
import torch

from camotune.model import CamoXpert, CamoXpertOutput, build_model
from camotune.model.moe import MoELayer

VARIANTS = ["edgenext_xx_small", "edgenext_x_small", "edgenext_small", "edgenext_base"]
CHANNELS = {
    "edgenext_xx_small": [24, 48, 88, 168],
    "edgenext_x_small": [32, 64, 100, 192],
    "edgenext_small": [48, 96, 160, 304],
    "edgenext_base": [80, 160, 288, 584],
}


@pytest.fixture(scope="module", params=[(v, d) for v in VARIANTS for d in (False, True)],
                ids=lambda p: f"{p[0]}-deep{int(p[1])}")
def model(request: pytest.FixtureRequest) -> CamoXpert:
    torch.manual_seed(0)
    name, deep = request.param
    return CamoXpert(name, deep_supervision=deep, pretrained=False).train()


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("n", [1, 2])
def test_shapes(model: CamoXpert, size: int, n: int) -> None:
    assert model.backbone.feature_info.channels() == CHANNELS[model.backbone_name]
    with torch.no_grad():
        out = model(torch.randn(n, 3, size, size))
    assert isinstance(out, CamoXpertOutput)
    assert out.logits.shape == (n, 1, size, size)
    assert out.logits.dtype == torch.float32 and torch.isfinite(out.logits).all()
    assert out.aux_loss.shape == () and torch.isfinite(out.aux_loss)
    if model.deep_supervision:
        assert [tuple(d.shape) for d in out.deep] == [(n, 1, size // s, size // s) for s in (16, 8, 4)]
    else:
        assert out.deep == []


def test_result_is_typed_and_aux_is_differentiable() -> None:
    torch.manual_seed(0)
    model = CamoXpert("edgenext_xx_small", pretrained=False)
    out = model(torch.randn(1, 3, 32, 32))
    logits, aux, deep = out  # a NamedTuple: unpacks, and DDP/compile see plain tensors
    assert logits is out.logits and aux is out.aux_loss and deep == []
    assert aux.requires_grad and aux.grad_fn is not None
    assert CamoXpertOutput._fields == ("logits", "aux_loss", "deep")


def test_batch_of_one_in_training_mode_backpropagates() -> None:
    torch.manual_seed(0)
    model = CamoXpert("edgenext_xx_small", deep_supervision=True, pretrained=False).train()
    out = model(torch.randn(1, 3, 32, 32))
    (out.logits.mean() + sum(d.mean() for d in out.deep) + out.aux_loss).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_odd_input_size_and_odd_decoder_width() -> None:
    """Sizes that are not multiples of 32 and a width (100) with no 8-head split still work."""
    torch.manual_seed(0)
    model = CamoXpert("edgenext_xx_small", pretrained=False, decoder_channels=100,
                      deep_supervision=True)
    out = model(torch.randn(2, 3, 40, 56))
    assert out.logits.shape == (2, 1, 40, 56)
    layer = MoELayer(100, num_experts=9, top_k=3)
    y, aux = layer(torch.randn(2, 100, 5, 7))
    assert y.shape == (2, 100, 5, 7) and aux.shape == ()


def test_bf16_autocast_and_channels_last_on_cpu() -> None:
    torch.manual_seed(0)
    model = CamoXpert("edgenext_xx_small", deep_supervision=True, pretrained=False)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.logits.dtype == torch.float32 and torch.isfinite(out.logits).all()
    assert all(d.dtype == torch.float32 for d in out.deep)
    (out.logits.mean() + out.aux_loss).backward()
    router = model.moe_layers()[0].router
    assert torch.isfinite(router.local.weight.grad).all()


def test_build_model_from_train_config() -> None:
    from camotune.trainer.config import TrainConfig

    cfg = TrainConfig(backbone="edgenext_xx_small", num_experts=5, top_k=1,
                      deep_supervision=True, pretrained=False)
    model = build_model(cfg)
    assert isinstance(model, CamoXpert) and model.deep_supervision
    assert all(len(m.experts) == 5 and m.router.top_k == 1 for m in model.moe_layers())
