"""Backbone weights: the hub offline, local .safetensors/.pth files, bad files."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import save_file

from camotune.errors import BadInput
from camotune.model import CamoXpert

NAME = "edgenext_xx_small"


def _other_classifier() -> torch.nn.Module:
    torch.manual_seed(99)  # different from the model's seed below
    return timm.create_model(NAME, pretrained=False)


def _model(**kw: object) -> CamoXpert:
    torch.manual_seed(0)
    return CamoXpert(NAME, **kw).eval()


def _output(model: CamoXpert) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.ones(1, 3, 32, 32)).logits


def test_offline_hub_fails_at_once_naming_both_flags(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # empty cache
    start = time.monotonic()
    with pytest.raises(BadInput) as err:
        CamoXpert(NAME, pretrained=True)
    assert time.monotonic() - start < 10
    assert "--pretrained-path" in str(err.value) and "--no-pretrained" in str(err.value)


def test_unreachable_hub_fails_at_once_without_the_offline_flag(monkeypatch) -> None:
    def refuse(*_a: object, **_k: object) -> socket.socket:
        raise OSError("network is unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    start = time.monotonic()
    with pytest.raises(BadInput, match=r"cannot reach huggingface\.co") as err:
        CamoXpert(NAME, pretrained=True)
    assert time.monotonic() - start < 10
    assert "--pretrained-path" in str(err.value) and "--no-pretrained" in str(err.value)


def test_safetensors_classifier_weights_load_and_change_outputs(tmp_path: Path) -> None:
    source = _other_classifier().state_dict()
    file = tmp_path / "edgenext.safetensors"
    save_file({k: v.contiguous() for k, v in source.items()}, str(file))  # head keys included
    plain = _model(pretrained=False)
    loaded = _model(pretrained=True, pretrained_path=str(file))  # the file wins: no hub access
    assert torch.equal(loaded.backbone.stem_0.weight, source["stem.0.weight"])
    assert torch.equal(loaded.backbone.stages_3.blocks[0].conv_dw.weight,
                       source["stages.3.blocks.0.conv_dw.weight"])
    assert not torch.allclose(_output(plain), _output(loaded))
    # only the backbone changed: the heads started from the same seed
    torch.testing.assert_close(plain.moe[0].router.local.weight, loaded.moe[0].router.local.weight)


@pytest.mark.parametrize("wrap", ["plain", "checkpoint"])
def test_pth_backbone_weights_load(tmp_path: Path, wrap: str) -> None:
    torch.manual_seed(7)
    donor = CamoXpert(NAME, pretrained=False)
    file = tmp_path / "weights.pth"
    payload = (donor.backbone.state_dict() if wrap == "plain"
               else {"format": 1, "model": donor.state_dict(), "epoch": 3})
    torch.save(payload, file)
    loaded = _model(pretrained=False, pretrained_path=str(file))
    for (name, a), b in zip(donor.backbone.state_dict().items(),
                            loaded.backbone.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.allclose(_output(_model(pretrained=False)), _output(loaded))


def test_missing_file_is_bad_input_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(BadInput, match=r"nope\.safetensors"):
        CamoXpert(NAME, pretrained=False, pretrained_path=str(missing))


def test_weights_of_another_backbone_are_bad_input(tmp_path: Path) -> None:
    file = tmp_path / "x_small.pth"
    torch.save(timm.create_model("edgenext_x_small", pretrained=False).state_dict(), file)
    with pytest.raises(BadInput, match=r"x_small\.pth.*missing or of another shape"):
        CamoXpert(NAME, pretrained=False, pretrained_path=str(file))


def test_unreadable_file_is_bad_input(tmp_path: Path) -> None:
    file = tmp_path / "junk.safetensors"
    file.write_bytes(b"not a weights file")
    with pytest.raises(BadInput, match=r"junk\.safetensors"):
        CamoXpert(NAME, pretrained=False, pretrained_path=str(file))
    file = tmp_path / "junk.pth"
    file.write_bytes(b"not a weights file")
    with pytest.raises(BadInput, match=r"junk\.pth"):
        CamoXpert(NAME, pretrained=False, pretrained_path=str(file))
