"""The timm feature backbone: creation, weights (hub or local file), and stage partition.

`create_backbone` returns a timm ``features_only`` module giving four maps at strides 4, 8,
16 and 32. Weights come from one of three places:

- ``pretrained_path``: a local ``.safetensors`` or ``.pth``/``.pt`` file, either a plain
  backbone state dict, a full classification model's (head keys are ignored) or a checkpoint
  holding one under ``state_dict``/``model``. Wins over ``pretrained``.
- ``pretrained=True``: timm's hub download. Offline it fails at once with `BadInput` naming
  ``--pretrained-path`` and ``--no-pretrained`` (a short connection probe runs first, because
  the hub client otherwise retries for about a minute).
- neither: random initialisation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from torch import nn

from camotune.errors import BadInput

log = logging.getLogger(__name__)

STRIDES = (4, 8, 16, 32)
_FIX = "pass --pretrained-path FILE (local .safetensors or .pth weights) or --no-pretrained"


def create_backbone(name: str, *, pretrained: bool = False, pretrained_path: str = "") -> nn.Module:
    """A timm ``features_only`` model of ``name`` with outputs at `STRIDES`.

    Raises `BadInput` for an unknown name, a backbone without those four scales, unreachable
    hub weights, or a weights file that is missing, unreadable or does not match.
    """
    if not timm.is_model(name):
        raise BadInput(f"--backbone {name!r} is not a timm model name (e.g. edgenext_xx_small)")
    hub = pretrained and not pretrained_path
    if hub:
        _check_hub(name)
    net = _create(name, hub, (0, 1, 2, 3))
    reductions = list(net.feature_info.reduction())
    if reductions != list(STRIDES):
        every = [int(fi["reduction"]) for fi in net.feature_info.info]
        if not all(s in every for s in STRIDES):
            raise BadInput(f"--backbone {name} gives feature strides {every}; CamoXpert needs "
                           "four scales at strides 4, 8, 16 and 32")
        # the deepest level of each stride (e.g. ResNet's level 0 is at stride 2)
        indices = tuple(len(every) - 1 - every[::-1].index(s) for s in STRIDES)
        net = _create(name, hub, indices)
    if pretrained_path:
        load_backbone_weights(net, pretrained_path)
    return net


def _create(name: str, hub: bool, out_indices: tuple[int, ...]) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=hub, features_only=True, out_indices=out_indices)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:160]
        if hub:
            raise BadInput(f"--pretrained: cannot get timm weights for {name} "
                           f"({type(exc).__name__}: {first}); {_FIX}") from exc
        raise BadInput(f"--backbone {name}: timm cannot build it as a feature extractor "
                       f"({type(exc).__name__}: {first})") from exc


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _check_hub(name: str, timeout: float = 3.0) -> None:
    """Fail fast when the weights' host cannot be reached. With ``HF_HUB_OFFLINE`` set nothing
    is probed: timm then uses the local hub cache or fails at once by itself."""
    if _hub_offline():
        return
    import socket
    from urllib.parse import urlsplit
    from urllib.request import getproxies

    cfg = timm.models.get_pretrained_cfg(name)
    hf = bool(cfg is not None and cfg.hf_hub_id)
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co") if hf or cfg is None else cfg.url
    parts = urlsplit(getproxies().get(urlsplit(url).scheme or "https") or url)
    host, port = parts.hostname, parts.port or (80 if parts.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise BadInput(f"--pretrained: cannot reach {host} to download timm weights for {name} "
                       f"({exc.__class__.__name__}); {_FIX}, or set HF_HUB_OFFLINE=1 to use "
                       "weights already in the hub cache") from exc


# -- local weights files -------------------------------------------------------------------------

def load_backbone_weights(net: nn.Module, path: str) -> None:
    """Load a weights file into ``net`` (a timm features_only module); see the module doc.

    Every backbone tensor must be found with the right shape, else `BadInput` naming the file.
    """
    file = Path(path)
    if not file.is_file():
        raise BadInput(f"--pretrained-path {path}: no such file")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(file), device="cpu")
        else:
            raw = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BadInput(f"--pretrained-path {path}: cannot read weights "
                       f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]})") from exc
    source = _unwrap(raw)
    target = net.state_dict()
    mapped, bad = match_state_dict(target, source)
    if bad:
        raise BadInput(f"--pretrained-path {path}: {len(bad)} of {len(target)} backbone tensors "
                       f"missing or of another shape (e.g. {', '.join(bad[:3])}); is it a "
                       "checkpoint of this --backbone?")
    net.load_state_dict(mapped, strict=True)
    log.info("loaded backbone weights file=%s tensors=%d ignored=%d", path, len(mapped),
             len(source) - len(mapped))


def _unwrap(obj: object) -> dict[str, torch.Tensor]:
    for _ in range(3):  # checkpoint -> {"model": {...}} -> tensors
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in ("state_dict", "model", "model_state_dict", "module")
                      if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        return {}
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def match_state_dict(target: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor]
                     ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map ``source`` keys onto a features_only module's keys; returns (mapped, bad keys).

    Accepted spellings: the features_only names, a classification model's names (timm
    flattens ``stages.0`` into ``stages_0``), each optionally under ``backbone.``, ``module.``
    or ``_orig_mod.``.
    """
    index: dict[str, torch.Tensor] = {}
    for exact in (True, False):  # exact spellings win over rewritten ones
        for key, value in source.items():
            k = key
            while k.startswith(("module.", "_orig_mod.")):
                k = k.split(".", 1)[1]
            for cand in (k, k.removeprefix("backbone.")):
                index.setdefault(cand if exact else _flatten(cand), value)
    mapped, bad = {}, []
    for key, ref in target.items():
        value = index.get(key)
        if value is None or value.shape != ref.shape:
            bad.append(key)
        else:
            mapped[key] = value
    return mapped, bad


def _flatten(key: str) -> str:
    parts = key.split(".")
    return key if len(parts) < 3 else f"{parts[0]}_{parts[1]}." + ".".join(parts[2:])


# -- stage partition for progressive unfreezing ------------------------------------------------

def parameter_stages(net: nn.Module) -> dict[str, int]:
    """Feature level (0 = shallowest) of every parameter of a features_only module.

    A parameter under a feature module's name belongs to that level; one before it (stem,
    downsampling layers) belongs to the next level, one after the last to the last level.
    """
    names = [str(n) for n in net.feature_info.module_name()]
    prefixes = [(n + ".", n.replace(".", "_") + ".") for n in names]
    order = [n for n, _ in net.named_parameters()]
    level: dict[str, int | None] = {}
    for n in order:
        hit = [i for i, pre in enumerate(prefixes) if n.startswith(pre) or any(f".{p}" in n for p in pre)]
        level[n] = hit[-1] if hit else None
    result: dict[str, int] = {}
    upcoming = len(names) - 1
    for n in reversed(order):
        upcoming = level[n] if level[n] is not None else upcoming
        result[n] = upcoming
    return {n: result[n] for n in order}
