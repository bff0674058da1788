"""What every trial of a sweep will need, checked once before Ray starts.

A sweep otherwise finds a missing weights file or a value the base config cannot take in
each trial, after Ray's start-up, as one traceback per trial. `check_trials` raises
`BadInput` (one line, exit 2) with the message ``camotune train`` would give for the same
config, before any sweep folder exists:

- every config a trial is sure to get: the base config (the sweep's training flags) with the
  space's fixed values, every run of a factorial design and every point;
- each searched value that is cheap to enumerate (every choice, both ends of a range, every
  integer of a small range) on the base config: when the base config refuses every value of a
  searched field no trial could run (exit 2); when it refuses some, the trials that sample one
  end as ``error`` with that message and the sweep goes on, and a warning says so up front;
- hub weights (``--pretrained`` without ``--pretrained-path``) for every backbone a trial can
  use: the backbone is built once with its weights, exactly as a trial would (offline, or with
  the hub unreachable, this fails at once with the same line as ``camotune train``; online it
  fills the hub cache the trials then read).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from camotune.errors import BadInput, excerpt
from camotune.spaces.space import Space
from camotune.spaces.validate import values_to_check
from camotune.trainer.config import TrainConfig

log = logging.getLogger(__name__)


def trial_configs(space: Space, base: TrainConfig, points: list[dict[str, Any]],
                  base_seed: int) -> Iterator[TrainConfig]:
    """The configs checked: base + fixed, then one per enumerable searched value that the base
    config takes (see the module docstring), every design run and every point. Each is built
    with `Space.apply`, so a bad value raises `BadInput` naming the space and the flag."""
    yield space.apply(base, {})
    for name, dist in space.params.items():
        yield from _searched(space, base, name, values_to_check(dist))
    for params in space.design_trials(base_seed):
        yield space.apply(base, params)
    for point in points:
        yield space.apply(base, point)


def _searched(space: Space, base: TrainConfig, name: str,
              values: list[Any]) -> Iterator[TrainConfig]:
    refused: list[tuple[Any, BadInput]] = []
    taken = []
    for value in values:
        try:
            taken.append(space.apply(base, {name: value}))
        except BadInput as exc:
            refused.append((value, exc))
    if refused and not taken:
        raise refused[0][1]
    for value, exc in refused:
        log.warning("params.%s: %s; trials that sample %s end as error", name, exc,
                    excerpt(value))
    yield from taken


def check_trials(space: Space, base: TrainConfig, points: list[dict[str, Any]],
                 base_seed: int) -> None:
    """Raise `BadInput` when a trial the sweep is sure to run could not start, or no value of
    a searched field could (module docstring)."""
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
