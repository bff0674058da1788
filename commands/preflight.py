"""What every trial of a sweep will need, checked once before Ray starts.

A sweep otherwise finds a missing weights file or a value the base config cannot take in
each trial, after Ray's start-up, as one traceback per trial. `check_trials` raises
`BadInput` (one line, exit 2) with the message ``camotune train`` would give for the same
config, before any sweep folder exists:

- every config a trial can get: the base config (the sweep's training flags) with the space's
  fixed values and each searched value that is cheap to enumerate (every choice, both ends of
  a range, every integer of a small range; every run of a factorial design; every point);
- hub weights (``--pretrained`` without ``--pretrained-path``) for every backbone a trial can
  use: the backbone is built once with its weights, exactly as a trial would (offline, or with
  the hub unreachable, this fails at once with the same line as ``camotune train``; online it
  fills the hub cache the trials then read).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from camotune.spaces.space import Space
from camotune.spaces.validate import values_to_check
from camotune.trainer.config import TrainConfig

log = logging.getLogger(__name__)


def trial_configs(space: Space, base: TrainConfig, points: list[dict[str, Any]],
                  base_seed: int) -> Iterator[TrainConfig]:
    """The configs checked: base + fixed, then one per enumerable value (see the module
    docstring). Each is built with `Space.apply`, so a bad value raises `BadInput` naming
    the space and the flag."""
    yield space.apply(base, {})
    for name, dist in space.params.items():
        for value in values_to_check(dist):
            yield space.apply(base, {name: value})
    for params in space.design_trials(base_seed):
        yield space.apply(base, params)
    for point in points:
        yield space.apply(base, point)


def check_trials(space: Space, base: TrainConfig, points: list[dict[str, Any]],
                 base_seed: int) -> None:
    """Raise `BadInput` when some trial of the sweep could not start (module docstring)."""
    hub_backbones: set[str] = set()
    for cfg in trial_configs(space, base, points, base_seed):
        if cfg.pretrained and not cfg.pretrained_path:
            hub_backbones.add(cfg.backbone)
    for name in sorted(hub_backbones):
        check_hub_weights(name)


def check_hub_weights(backbone: str) -> None:
    """Build ``backbone`` with timm's hub weights once, as a trial would (`BadInput` with
    ``camotune train``'s line when they cannot be had)."""
    from camotune.model.backbone import create_backbone

    log.info("preflight: hub weights of %s", backbone)
    create_backbone(backbone, pretrained=True)
