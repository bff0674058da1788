"""The model probe behind `camotune diagnose`: one tiny batch through the configured model and
loss, checking outputs, loss terms and gradient flow in both stages."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from camotune.trainer.config import TrainConfig


def _probe_batch(size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(2, 3, size, size, generator=generator)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).float().sqrt()
    masks = (r < size / 4).float().expand(2, 1, size, size).clone()
    return images, masks


def probe_model(cfg: TrainConfig, *, size: int = 64) -> tuple[list, bool]:
    """Returns the ``model_output``, ``loss`` and ``gradient_flow`` checks, and whether the model
    has BatchNorm layers. Runs on the CPU in fp32 with 2 images of ``size`` px."""
    from camotune.model import UNFREEZE_LEVELS, build_model
    from camotune.trainer.diagnose import Check
    from camotune.trainer.losses import loss_from_config

    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(replace(cfg, img_size=size))
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    loss_fn = loss_from_config(cfg)
    images, masks = _probe_batch(size, gen)
    weights = "pretrained weights" if cfg.pretrained_path else "random initialisation"
    checks = []

    model.set_backbone_trainable(0)
    model.train()
    out = model(images)
    logits = out.logits.detach()
    finite = bool(torch.isfinite(logits).all())
    spread = float(logits.std()) if finite else math.nan
    expected = (2, 1, size, size)
    ok_shape = tuple(logits.shape) == expected
    status = "PASS" if finite and ok_shape and spread > 1e-6 else "FAIL"
    checks.append(Check("model_output", status,
                        f"logits {tuple(logits.shape)} (expected {expected}), finite={finite}, "
                        f"std={spread:.3g} ({cfg.backbone}, {weights}, {size} px probe)",
                        {"finite": finite, "logits_std": spread,
                         "deep_outputs": len(out.deep)}))

    total, terms = loss_fn(out, masks)
    total_value = float(total.detach())
    values = {f"loss_{k}": float(v) for k, v in terms.items() if k != "total"}
    loss_ok = math.isfinite(total_value) and all(math.isfinite(v) for v in values.values())
    checks.append(Check("loss", "PASS" if loss_ok else "FAIL",
                        f"total {total_value:.4g}; " + ", ".join(
                            f"{k[5:]} {v:.4g}" for k, v in values.items()),
                        {"loss_total": total_value, **values}))

    figures: dict = {}
    problems: list[str] = []
    for stage, level in ((1, 0), (2, UNFREEZE_LEVELS)):
        model.zero_grad(set_to_none=True)
        model.set_backbone_trainable(level)
        total, _ = loss_fn(model(images), masks)
        total.backward()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        missing = [n for n, p in named if p.grad is None]
        nonfinite = [n for n, p in named if p.grad is not None and not torch.isfinite(p.grad).all()]
        backbone = {id(p) for p in model.backbone_parameters()}
        head_norm = _norm([p for _, p in named if id(p) not in backbone])
        bb_norm = _norm([p for _, p in named if id(p) in backbone])
        router_norm = _norm([p for n, p in named if "router" in n])
        figures.update({f"stage{stage}_trainable": len(named),
                        f"stage{stage}_without_grad": len(missing),
                        f"stage{stage}_nonfinite_grad": len(nonfinite),
                        f"stage{stage}_head_grad_norm": head_norm,
                        f"stage{stage}_backbone_grad_norm": bb_norm,
                        f"stage{stage}_router_grad_norm": router_norm})
        if missing:
            problems.append(f"stage {stage}: {len(missing)} trainable tensors get no gradient "
                            f"(first: {missing[0]})")
        if nonfinite:
            problems.append(f"stage {stage}: non-finite gradient in {nonfinite[0]}")
    msg = (f"stage 1: {figures['stage1_trainable']} trainable tensors, head grad norm "
           f"{figures['stage1_head_grad_norm']:.3g}; stage 2: {figures['stage2_trainable']}, "
           f"backbone grad norm {figures['stage2_backbone_grad_norm']:.3g}")
    checks.append(Check("gradient_flow", "FAIL" if problems else "PASS",
                        "; ".join(problems) if problems else msg, figures))
    return checks, has_bn


def _norm(params: list[torch.nn.Parameter]) -> float:
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0
