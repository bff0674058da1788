"""Model throughput, measured side by side (a script, not a test).

1. The vectorised MoE layer against a per-sample loop implementing the same routing with the
   same weights (the loop asks the host which experts a sample uses, as naive code does).
   Input: the stride-4 map of the benchmark image size, at the model's decoder width.
2. The whole model against its bare backbone, both trained end to end (level 3), and the
   model with the backbone frozen (stage 1: no backbone backward).

All figures are forward+backward images per second (median over timed repeats).

    python benchmarks/bench_model.py [--size 64] [--device cpu] [--quick]

Defaults: CPU -> edgenext_xx_small at 64 px; CUDA -> edgenext_base at 384 px (bf16 autocast).
`run(quick, device)` returns the rows for a suite runner.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from camotune.model import CamoXpert
from camotune.model.moe import MoELayer, load_balance_loss


def looped_moe(layer: MoELayer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same computation as ``layer(x)``, one sample and one used expert at a time."""
    outs, probs_all, chosen_all = [], [], []
    for b in range(x.shape[0]):
        xb = x[b : b + 1]
        weights, probs, chosen = layer.router(xb)
        used = chosen.amax(dim=(0, 2, 3)).tolist()  # host sync, as naive dispatch does
        y = xb
        for e, expert in enumerate(layer.experts):
            if used[e]:
                y = y + weights[:, e : e + 1].to(xb.dtype) * expert(xb)
        outs.append(layer.norm(y))
        probs_all.append(probs)
        chosen_all.append(chosen)
    aux = load_balance_loss(torch.cat(probs_all), torch.cat(chosen_all), layer.top_k)
    return torch.cat(outs), aux


def _time(steps: list[Callable[[], None]], device: str, repeats: int, warmup: int = 2
          ) -> list[float]:
    """Median seconds of each step, the steps interleaved so that a noisy machine (other
    processes, clock changes) affects them alike."""
    for step in steps:
        for _ in range(warmup):
            step()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for i, step in enumerate(steps):
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            step()
            if device == "cuda":
                torch.cuda.synchronize()
            times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def _sync_free(step: Callable[[], None]) -> float:
    """1.0 when ``step`` runs with CUDA's sync debug mode set to error, else 0.0."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        return 1.0
    except RuntimeError as exc:
        print(f"host sync: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 0.0
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _fwd_bwd(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, amp: bool,
             device: str) -> Callable[[], None]:
    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            loss = fn(x)
        loss.backward()

    return step


def run(quick: bool = True, device: str = "cpu", *, size: int = 0, backbone: str = "",
        batch: int = 0, threads: int = 1) -> list[dict]:
    """Measure and return rows ``{"name", "value", "unit", "goal", "command"}``."""
    cuda = device == "cuda"
    size = size or (384 if cuda else 64)
    backbone = backbone or ("edgenext_base" if cuda else "edgenext_xx_small")
    batch = batch or 8
    repeats = 3 if quick else 10
    amp = cuda
    if not cuda:
        torch.set_num_threads(threads)
    command = (f"python benchmarks/bench_model.py --device {device} --size {size} "
               f"--backbone {backbone} --batch {batch}" + (" --quick" if quick else ""))
    torch.manual_seed(0)
    model = CamoXpert(backbone, pretrained=False, deep_supervision=True).to(device).train()
    x = torch.randn(batch, 3, size, size, device=device)

    layer = model.moe_layers()[0]
    fx = torch.randn(batch, model.decoder_channels, size // 4, size // 4, device=device)
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
        diff = (layer(fx)[0].float() - looped_moe(layer, fx)[0].float()).abs().max().item()
    t_vec, t_loop = _time([
        _fwd_bwd(lambda t: sum(v.float().mean() for v in layer(t)), fx, amp, device),
        _fwd_bwd(lambda t: sum(v.float().mean() for v in looped_moe(layer, t)), fx, amp, device),
    ], device, repeats)

    def loss_of(net: CamoXpert) -> Callable[[torch.Tensor], torch.Tensor]:
        def loss(t: torch.Tensor) -> torch.Tensor:
            out = net(t)
            return out.logits.mean() + sum(d.mean() for d in out.deep) + out.aux_loss

        return loss

    model_loss = loss_of(model)
    frozen = CamoXpert(backbone, pretrained=False, deep_supervision=True).to(device)
    frozen.load_state_dict(model.state_dict())
    frozen.set_backbone_trainable(0)
    frozen.train()

    bare = model.backbone
    t_bb, t_model, t_frozen = _time([
        _fwd_bwd(lambda t: sum(f.float().mean() for f in bare(t)), x, amp, device),
        _fwd_bwd(model_loss, x, amp, device),
        _fwd_bwd(loss_of(frozen), x, amp, device),
    ], device, repeats)
    tag = f"{backbone} {size}px b{batch} {device}"
    sync_rows = []
    if cuda:
        with torch.autocast(device, dtype=torch.bfloat16):
            feats = model.features(x)

        def head_forward() -> None:
            with torch.autocast(device, dtype=torch.bfloat16):
                model.decode(feats, (size, size))

        def forward() -> None:
            with torch.autocast(device, dtype=torch.bfloat16):
                model(x)

        # timm's EdgeNeXt positional encoding copies a host tensor to the GPU (a sync that
        # is not ours), hence the separate row for everything after the backbone
        sync_rows = [
            {"name": f"head_forward_without_host_sync ({tag})", "value": _sync_free(head_forward),
             "unit": "bool", "goal": "1", "command": command},
            {"name": f"forward_without_host_sync ({tag})", "value": _sync_free(forward),
             "unit": "bool", "goal": "1 (0 for EdgeNeXt: timm's own copy)", "command": command},
            {"name": f"forward_backward_without_host_sync ({tag})",
             "value": _sync_free(_fwd_bwd(model_loss, x, amp, device)), "unit": "bool",
             "goal": "1 (informational)", "command": command},
        ]
    model.zero_grad(set_to_none=True)
    ips = "images/s"
    return [
        {"name": f"moe_vectorised ({tag})", "value": batch / t_vec, "unit": ips, "goal": "higher",
         "command": command},
        {"name": f"moe_per_sample_loop ({tag})", "value": batch / t_loop, "unit": ips,
         "goal": "reference", "command": command},
        {"key": "moe_speedup", "name": f"vectorised MoE / per-sample loop, fwd+bwd speed "
         f"({tag}, stride-4 map)", "value": t_loop / t_vec, "unit": "x", "goal": "> 1",
         "met": t_loop / t_vec > 1, "command": command},
        {"key": "moe_max_abs_diff", "name": f"vectorised MoE vs per-sample loop, max |output "
         f"difference| ({tag})", "value": diff, "unit": "abs",
         "goal": "< 5e-2 (bf16)" if amp else "< 1e-4 (fp32)",
         "met": diff < (5e-2 if amp else 1e-4), "command": command},
        {"name": f"backbone_alone ({tag})", "value": batch / t_bb, "unit": ips,
         "goal": "reference", "command": command},
        {"name": f"model_level3 ({tag})", "value": batch / t_model, "unit": ips,
         "goal": "higher", "command": command},
        {"name": f"model_time_over_backbone ({tag})", "value": t_model / t_bb, "unit": "x",
         "goal": "informational (head cost)", "command": command},
        {"name": f"model_level0_frozen ({tag})", "value": batch / t_frozen, "unit": ips,
         "goal": "> model_level3", "command": command},
        *sync_rows,
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--size", type=int, default=0, help="image side (default 64 CPU, 384 CUDA)")
    p.add_argument("--backbone", default="", help="default xx_small on CPU, base on CUDA")
    p.add_argument("--batch", type=int, default=0, help="images per step (default 8)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--quick", action="store_true", help="3 timed repeats instead of 10")
    a = p.parse_args(argv)
    rows = run(a.quick, a.device, size=a.size, backbone=a.backbone, batch=a.batch,
               threads=a.threads)
    width = max(len(r["name"]) for r in rows)
    print(f"{'name':<{width}}  {'value':>10}  {'unit':<8}  goal")
    for r in rows:
        value = f"{r['value']:.3g}" if r["unit"] in ("abs", "bool") else f"{r['value']:.2f}"
        print(f"{r['name']:<{width}}  {value:>10}  {r['unit']:<8}  {r['goal']}")
    print(f"command: {rows[0]['command']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
