"""From two training configurations, one that worked (good) and one that did not (bad), to the
factors that tell them apart.

A *factor* is a `TrainConfig` field whose value differs between the two runs, or a group of
fields moved together (``group=[("batch_size", "accumulation_steps")]`` makes one factor named
``"batch_size+accumulation_steps"``). Fields that change how a run executes or where it writes,
not what it learns (`NOT_FACTORS`), never count. Each factor has two levels: the good run's
value(s), coded -1, and the bad run's, coded +1. The design over these factors lives in
:mod:`camotune.spaces.pair_design`.

`shorten` cuts both runs to the same number of epochs with the stage split scaled, so a
sweep over the pair can run on a budget. Shortened runs answer a question about the shortened
runs only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from camotune.errors import BadInput
from camotune.trainer.config import FIELDS, RUNTIME_FIELDS, TrainConfig, flag

__all__ = ["NOT_FACTORS", "Factor", "apply_levels", "pair_factors", "shorten"]

# Fields that may differ between the good and the bad run without being a cause: where files
# go and how a run executes (RUNTIME_FIELDS), the data (one --dataset-path for the whole
# comparison), the seed (seeds are the blocks of the design), how often the slow metrics are
# computed, and torch.compile (same computation, compiled).
NOT_FACTORS: frozenset[str] = RUNTIME_FIELDS | frozenset(
    {"dataset_path", "seed", "full_metrics_every", "compile"}
)

GOOD, BAD = "good", "bad"


@dataclass(frozen=True)
class Factor:
    """One factor: the fields it moves and their values in the good and the bad run.

    ``name`` is the field, or the grouped fields joined by ``+`` in the order given.
    """

    name: str
    fields: tuple[str, ...]
    good: tuple[Any, ...]
    bad: tuple[Any, ...]

    def values(self, level: str) -> dict[str, Any]:
        """Field -> value at ``level`` (``"good"`` or ``"bad"``)."""
        if level not in (GOOD, BAD):
            raise BadInput(f"factor {self.name}: level must be 'good' or 'bad' (got {level!r})")
        return dict(zip(self.fields, self.good if level == GOOD else self.bad, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """``{name, fields, good, bad}``; ``good``/``bad`` are the value for a single field and a
        field -> value mapping for a group."""
        if len(self.fields) == 1:
            return {"name": self.name, "fields": list(self.fields),
                    "good": self.good[0], "bad": self.bad[0]}
        return {"name": self.name, "fields": list(self.fields),
                "good": self.values(GOOD), "bad": self.values(BAD)}


def _check_field(name: str, where: str) -> None:
    if name not in FIELDS:
        raise BadInput(f"{where}: {name!r} is not a TrainConfig field")
    if name in NOT_FACTORS:
        raise BadInput(f"{where}: {flag(name)} is a run-time setting and never a factor")


def pair_factors(good: TrainConfig, bad: TrainConfig, *,
                 group: Iterable[Sequence[str]] = ()) -> list[Factor]:
    """The factors that tell ``good`` from ``bad``, in TrainConfig field order (a group sits
    where its first field would).

    Every field of a group must differ between the runs and belong to one group only; unknown
    or run-time fields raise :class:`BadInput`, and so do two runs that differ in no factor.
    """
    groups = [tuple(g) for g in group]
    owner: dict[str, int] = {}
    for i, fields in enumerate(groups):
        if len(fields) < 2:
            raise BadInput(f"--group {','.join(fields)}: a group needs at least two fields")
        for name in fields:
            _check_field(name, f"--group {','.join(fields)}")
            if name in owner:
                raise BadInput(f"--group: {name} is in more than one group")
            if getattr(good, name) == getattr(bad, name):
                raise BadInput(f"--group {','.join(fields)}: {flag(name)} is the same in both "
                               f"runs ({getattr(good, name)!r})")
            owner[name] = i
    factors: list[Factor] = []
    placed: set[int] = set()
    for name in FIELDS:
        if name in owner:
            i = owner[name]
            if i not in placed:
                placed.add(i)
                fields = groups[i]
                factors.append(Factor("+".join(fields), fields,
                                      tuple(getattr(good, f) for f in fields),
                                      tuple(getattr(bad, f) for f in fields)))
        elif name not in NOT_FACTORS and getattr(good, name) != getattr(bad, name):
            factors.append(Factor(name, (name,), (getattr(good, name),), (getattr(bad, name),)))
    if not factors:
        raise BadInput("the good and the bad run differ in no training setting "
                       "(run-time settings such as --checkpoint-dir never count)")
    return factors


def shorten(cfg: TrainConfig, epochs: int) -> TrainConfig:
    """``cfg`` cut (or stretched) to ``epochs`` epochs with the stage split scaled.

    A two-stage run keeps two stages: ``stage1_epochs`` becomes ``round(stage1_epochs x
    epochs / cfg.epochs)``, at least 1 and at most ``epochs - 1`` (so ``epochs`` must be >= 2).
    A run that is all stage 1 (``stage1_epochs == epochs``) or all stage 2
    (``stage1_epochs == 0``) stays so. Step-counted settings (``warmup_steps``) are not scaled.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise BadInput(f"--epochs must be an integer >= 1 (got {epochs!r})")
    if cfg.stage1_epochs == 0:
        stage1 = 0
    elif cfg.stage1_epochs >= cfg.epochs:
        stage1 = epochs
    else:
        if epochs < 2:
            raise BadInput(f"--epochs {epochs} cannot keep both stages of a run with "
                           f"--stage1-epochs {cfg.stage1_epochs} of --epochs {cfg.epochs} "
                           "(need at least 2)")
        stage1 = math.floor(cfg.stage1_epochs * epochs / cfg.epochs + 0.5)
        stage1 = min(max(stage1, 1), epochs - 1)
    return dataclasses.replace(cfg, epochs=epochs, stage1_epochs=stage1)


def apply_levels(base: TrainConfig, factors: Sequence[Factor],
                 levels: dict[str, str]) -> TrainConfig:
    """``base`` (normally the good run) with each factor set to its value at
    ``levels[name]`` (``"good"`` or ``"bad"``). A combination that TrainConfig rejects (say
    ``--top-k`` above ``--num-experts``) raises :class:`BadInput` from its validation."""
    changes: dict[str, Any] = {}
    for factor in factors:
        changes.update(factor.values(levels[factor.name]))
    return dataclasses.replace(base, **changes)
