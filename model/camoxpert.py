"""CamoXpert: a timm backbone, a gated mixture-of-experts per scale, a top-down decoder.

Data flow for an input ``B x 3 x H x W`` (ImageNet-normalised; H, W multiples of 32 are
typical, others work):

1. backbone (timm ``features_only``): four maps at strides 4, 8, 16, 32;
2. per scale: 1x1 projection to the decoder width ``D`` (GroupNorm, GELU), a CBAM-style
   channel-and-spatial gate (`AttentionGate`), a `MoELayer` of ``num_experts`` experts with
   top-k routing (`camotune.model.moe`);
3. decoder: from stride 32 down to stride 4, each step upsamples, concatenates the scale's
   MoE output (skip connection) and mixes with a separable 3x3 block;
4. head at stride 4 -> one logit map, bilinearly upsampled to ``H x W``. With deep
   supervision, 1x1 heads on the decoder maps at strides 16, 8 and 4.

``D`` is 64 for backbones whose deepest map has < 384 channels (EdgeNeXt xx_small to small)
and 96 above (EdgeNeXt base): the head then holds ~0.4M (D=64) to ~0.9M (D=96) parameters.

``forward`` is ``decode(features(x), (H, W))``: `CamoXpert.features` runs the backbone,
`CamoXpert.decode` everything after it (useful to time or check the head alone).

Two-stage training: ``set_backbone_trainable(level)`` with level 0 (frozen: the backbone runs
under ``torch.no_grad()`` and stays in eval mode even in ``model.train()``) up to
`UNFREEZE_LEVELS` (all of it). Level 1 opens the deepest feature level, 2 the two deepest,
3 everything (stem included). Frozen BatchNorm layers (non-EdgeNeXt backbones) stay in eval.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import torch
from torch import nn

from camotune.errors import BadInput
from camotune.model.backbone import create_backbone, parameter_stages
from camotune.model.blocks import AttentionGate, ConvNormAct, SepConvBlock, resize_to
from camotune.model.moe import MoELayer

UNFREEZE_LEVELS = 3


class CamoXpertOutput(NamedTuple):
    """What `CamoXpert.forward` returns. All tensors are float32, even under autocast."""

    logits: torch.Tensor  # B x 1 x H x W, pre-sigmoid
    aux_loss: torch.Tensor  # scalar: mean MoE load-balancing loss over the 4 layers (1 = balanced)
    deep: list[torch.Tensor]  # [B x 1 x H/16 x W/16, H/8, H/4] logits, or [] without deep supervision


class CamoXpert(nn.Module):
    """The CamoXpert camouflaged-object detector (see the module doc for the design).

    Bad settings (unknown backbone, ``top_k`` outside ``[1, num_experts]``, unreachable or
    mismatching weights) raise `camotune.errors.BadInput` naming the flag or file.
    """

    def __init__(self, backbone: str = "edgenext_base", num_experts: int = 7, top_k: int = 2,
                 deep_supervision: bool = False, pretrained: bool = True,
                 pretrained_path: str = "", *, decoder_channels: int = 0) -> None:
        super().__init__()
        if num_experts < 1:
            raise BadInput(f"--num-experts must be >= 1 (got {num_experts})")
        if not 1 <= top_k <= num_experts:
            raise BadInput(f"--top-k must lie in [1, --num-experts={num_experts}] (got {top_k})")
        self.backbone = create_backbone(backbone, pretrained=pretrained,
                                        pretrained_path=pretrained_path)
        channels = [int(c) for c in self.backbone.feature_info.channels()]
        dim = decoder_channels or (64 if channels[-1] < 384 else 96)
        self.backbone_name = backbone
        self.deep_supervision = deep_supervision
        self.decoder_channels = dim
        self.nhwc = getattr(self.backbone, "output_fmt", "NCHW") == "NHWC"
        self.lateral = nn.ModuleList(ConvNormAct(c, dim, 1) for c in channels)
        self.gates = nn.ModuleList(AttentionGate(dim) for _ in channels)
        self.moe = nn.ModuleList(MoELayer(dim, num_experts, top_k) for _ in channels)
        self.fuse = nn.ModuleList(SepConvBlock(2 * dim, dim) for _ in channels[:-1])
        self.head = nn.Sequential(ConvNormAct(dim, dim, 3), nn.Conv2d(dim, 1, 1))
        self.deep_heads = nn.ModuleList(nn.Conv2d(dim, 1, 1) for _ in range(3)) if deep_supervision else None
        stages = parameter_stages(self.backbone)
        self._param_group = {n: min(UNFREEZE_LEVELS, len(channels) - s) for n, s in stages.items()}
        self.unfreeze_level = UNFREEZE_LEVELS
        self.set_backbone_trainable(UNFREEZE_LEVELS)

    # -- forward ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> CamoXpertOutput:
        return self.decode(self.features(x), tuple(x.shape[-2:]))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's four maps (NCHW), without autograd while it is frozen (level 0)."""
        ctx = torch.no_grad() if self.unfreeze_level == 0 else contextlib.nullcontext()
        with ctx:
            feats = self.backbone(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        if self.nhwc:
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        return list(feats)

    def decode(self, feats: list[torch.Tensor], size: tuple[int, int]) -> CamoXpertOutput:
        """Everything after the backbone: gates, MoE layers, decoder, heads; logits at ``size``."""
        maps, aux = [], []
        for f, lateral, gate, moe in zip(feats, self.lateral, self.gates, self.moe, strict=True):
            y, a = moe(gate(lateral(f)))
            maps.append(y)
            aux.append(a)
        p = maps[-1]
        decoded = []  # strides 16, 8, 4
        for i in range(len(maps) - 2, -1, -1):
            p = self.fuse[i](torch.cat([maps[i], resize_to(p, maps[i])], dim=1))
            decoded.append(p)
        logits = resize_to(self.head(p).float(), size)
        deep = []
        if self.deep_heads is not None:
            deep = [head(d).float() for head, d in zip(self.deep_heads, decoded, strict=True)]
        return CamoXpertOutput(logits, torch.stack(aux).mean(), deep)

    # -- two-stage training -------------------------------------------------------------------
    def set_backbone_trainable(self, level: int) -> None:
        """Backbone trainability: 0 frozen ... `UNFREEZE_LEVELS` all; deepest part first."""
        if not 0 <= level <= UNFREEZE_LEVELS:
            raise ValueError(f"level must lie in [0, {UNFREEZE_LEVELS}] (got {level})")
        for name, param in self.backbone.named_parameters():
            param.requires_grad_(self._param_group[name] <= level)
        self.unfreeze_level = level
        self.train(self.training)

    def train(self, mode: bool = True) -> CamoXpert:
        super().train(mode)
        if mode and self.unfreeze_level == 0:
            self.backbone.eval()
        elif mode:
            for m in self.backbone.modules():
                params = list(m.parameters(recurse=False))
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and params and \
                        not any(p.requires_grad for p in params):
                    m.eval()  # frozen stages keep their running statistics
        return self

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Every backbone parameter (trainable or not)."""
        return list(self.backbone.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        """Every other parameter: projections, gates, MoE layers (routers included), decoder."""
        ids = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def moe_layers(self) -> list[MoELayer]:
        """The four MoE layers, shallowest first (each has ``.router`` and ``.experts``)."""
        return list(self.moe)


def build_model(cfg: Any) -> CamoXpert:
    """`CamoXpert` from a `TrainConfig` (or any object with backbone, num_experts, top_k,
    deep_supervision, pretrained and pretrained_path attributes)."""
    return CamoXpert(backbone=cfg.backbone, num_experts=cfg.num_experts, top_k=cfg.top_k,
                     deep_supervision=cfg.deep_supervision, pretrained=cfg.pretrained,
                     pretrained_path=cfg.pretrained_path)
