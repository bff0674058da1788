"""``PairDesign``: the two-level experiment between a good and a bad training run.

Every factor (see :mod:`camotune.spaces.pair`) is coded -1 at the good run's value and +1 at
the bad run's. The design is a full ``2^k`` factorial when it fits in ``max_runs`` distinct
runs; otherwise the smallest regular fraction of :class:`~camotune.spaces.design.Design` of
resolution V or higher, so no main effect or two-factor interaction is aliased with another.
Its generators all have positive sign, so the bad corner (all +1) is always a run; the good
corner (all -1) is a run only when every defining word has even length. A fraction without it
(every fraction of an odd number of factors, and e.g. the quarter fraction of 8) gets the good
corner as one extra run, which makes the design slightly unbalanced but keeps both corners
observed. Seeds are blocks: every run is trained once with each seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from camotune.errors import BadInput
from camotune.trainer.config import TrainConfig

from .design import Design, supported_fractions
from .pair import BAD, GOOD, Factor, apply_levels, pair_factors, shorten

__all__ = ["DEFAULT_MAX_RUNS", "PairDesign", "PairRun", "choose_design", "design_pair"]

DEFAULT_MAX_RUNS = 64
MIN_RESOLUTION = 5


@dataclass(frozen=True)
class PairRun:
    """One distinct run of the design: each factor's level and the config it trains (with the
    good run's seed; `PairDesign.trials` sets the seeds)."""

    levels: dict[str, str]
    config: TrainConfig

    @property
    def coded(self) -> dict[str, int]:
        """Factor -> -1 (good level) or +1 (bad level)."""
        return {name: -1 if level == GOOD else 1 for name, level in self.levels.items()}


def _has_corner(design: Design, sign: int) -> bool:
    return any(all(v == sign for v in row.values()) for row in design.coded())


def choose_design(names: Sequence[str], max_runs: int = DEFAULT_MAX_RUNS) -> tuple[Design, bool]:
    """The design for factors ``names`` and whether the good corner is an extra run.

    The full factorial when ``2^k <= max_runs``; else, of the fractions of resolution >= V
    that `Design` offers, the one with the fewest runs (counting the extra corner), a fraction
    that holds both corners winning a tie. :class:`BadInput` when nothing fits, naming the
    smallest run count that would.
    """
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 2:
        raise BadInput(f"max runs must be an integer >= 2 (got {max_runs!r})")
    levels = {name: (GOOD, BAD) for name in names}
    full = Design(levels)
    if full.n_runs <= max_runs:
        return full, False
    options = []
    for fraction in supported_fractions(len(levels))[1:]:
        design = Design(levels, fraction)
        if (design.resolution or 0) >= MIN_RESOLUTION:
            extra = not _has_corner(design, -1)
            options.append((design.n_runs + extra, extra, design))
    fitting = sorted((o for o in options if o[0] <= max_runs), key=lambda o: o[:2])
    if not fitting:
        least = min([o[0] for o in options] + [full.n_runs])
        raise BadInput(f"{len(levels)} factors need at least {least} runs per seed for a "
                       f"design of resolution V or more (max runs is {max_runs}): raise it, "
                       "or move fields together with --group")
    return fitting[0][2], fitting[0][1]


@dataclass(frozen=True)
class PairDesign:
    """The experiment between ``good`` and ``bad`` (both already shortened, if asked).

    ``runs`` are the distinct runs in the design's standard order, the extra good corner (if
    any) last; ``seeds`` the blocks. Build it with `design_pair`.
    """

    good: TrainConfig
    bad: TrainConfig
    factors: tuple[Factor, ...]
    design: Design
    extra_good_corner: bool
    seeds: tuple[int, ...]
    runs: tuple[PairRun, ...]

    @property
    def resolution(self) -> int | None:
        """Resolution of the fraction; ``None`` for a full factorial (nothing aliased)."""
        return self.design.resolution

    @property
    def n_trials(self) -> int:
        return len(self.runs) * len(self.seeds)

    def trials(self) -> list[tuple[int, int, TrainConfig]]:
        """``(run index, seed, config)`` for every run x seed, seed-major (all runs of the
        first seed, then the next), so a partial sweep still holds whole blocks."""
        return [(i, seed, dataclasses.replace(run.config, seed=seed))
                for seed in self.seeds for i, run in enumerate(self.runs)]

    def aliases(self) -> dict[str, list[str]]:
        """Each main effect and two-factor interaction (``"a"``, ``"a:b"``) -> the effects it is
        aliased with in the fraction (all of order 3 or more at resolution >= V); empty for a
        full factorial. The extra good corner, when present, breaks these aliases slightly
        (it is one run outside the fraction)."""
        names = self.design.factors
        out: dict[str, list[str]] = {}
        for order in (1, 2):
            for effect in combinations(names, order):
                found = self.design.aliases(*effect)
                if found:
                    out[":".join(effect)] = list(found)
        return out

    def summary(self) -> dict[str, Any]:
        """The JSON-ready ``factors`` and ``design`` of a report."""
        design = self.design
        kind = "full factorial" if design.fraction == 1 else f"1/{design.fraction} fraction"
        return {
            "factors": [f.to_dict() for f in self.factors],
            "design": {
                "type": kind,
                "runs": len(self.runs),
                "seeds": list(self.seeds),
                "trials": self.n_trials,
                "resolution": self.resolution,
                "generators": list(design.generators),
                "defining_relation": list(design.defining_relation),
                "letters": design.letters,
                "extra_good_corner": self.extra_good_corner,
                "aliases": self.aliases(),
                "epochs": self.good.epochs,
            },
        }


def _seeds(seeds: Iterable[int]) -> tuple[int, ...]:
    out = tuple(seeds)
    if not out:
        raise BadInput("--seeds: need at least one seed")
    for s in out:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise BadInput(f"--seeds: seeds must be integers >= 0 (got {s!r})")
    if len(set(out)) != len(out):
        raise BadInput(f"--seeds: seeds must be distinct (got {list(out)!r})")
    return out


def design_pair(good: TrainConfig, bad: TrainConfig, *, seeds: Iterable[int] = (0, 1),
                max_runs: int = DEFAULT_MAX_RUNS, epochs: int | None = None,
                group: Iterable[Sequence[str]] = ()) -> PairDesign:
    """The design between ``good`` and ``bad``: factors, runs and their configs.

    ``epochs`` shortens both runs alike first (see `shorten`), so the schedule fields differ
    only if the runs' stage splits do. ``max_runs`` bounds the distinct runs per seed (the
    trial count is runs x seeds). Every run's config is built and validated here, so a
    combination TrainConfig rejects fails before anything trains (:class:`BadInput` naming
    the run).
    """
    seeds = _seeds(seeds)
    if epochs is not None:
        good, bad = shorten(good, epochs), shorten(bad, epochs)
    factors = tuple(pair_factors(good, bad, group=group))
    design, extra = choose_design([f.name for f in factors], max_runs)
    rows = [{n: GOOD if v < 0 else BAD for n, v in row.items()} for row in design.coded()]
    if extra:
        rows.append(dict.fromkeys(design.factors, GOOD))
    runs = []
    for i, levels in enumerate(rows):
        try:
            config = apply_levels(good, factors, levels)
        except BadInput as exc:
            bad_ones = ", ".join(n for n, lv in levels.items() if lv == BAD) or "none"
            raise BadInput(f"design run {i + 1} (bad levels: {bad_ones}) is not a valid "
                           f"configuration: {exc}") from None
        runs.append(PairRun(levels, config))
    return PairDesign(good, bad, factors, design, extra, seeds, tuple(runs))
