"""Ray's ASHA rule replayed on recorded FIFO learning curves.

Ray's asynchronous successive halving (``ray.tune.schedulers.AsyncHyperBandScheduler``, one
bracket) keeps, per rung epoch r (``grace x rf**k``), the values of the trials that reached r.
A trial reaching r continues iff no value is recorded there yet, or its value is >= the
``(1 - 1/rf)`` quantile (``numpy.nanpercentile``) of the values already recorded; then its value
is recorded. Which values are "already recorded" depends on the order in which trials reach the
rung, so the replay also simulates that order: trials start in the order given, at most
``slots`` at once, each slot taking the next trial when its trial ends or is stopped, and each
trial reaches each epoch after the same seconds from its start as in the FIFO sweep (its
start-up included); a stopped trial frees its slot after the same tail (end event less last
epoch event) as it had in FIFO.

Training is deterministic on the CPU, so a configuration's curve under ASHA is its FIFO curve
cut short (bench_asha checks this with one real ASHA sweep): the replay is what a real ASHA
sweep with these trials would decide, up to the arrival order, which real timings can change
where two trials reach a rung within a fraction of a second of each other.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


def milestones(grace: int, rf: float, max_t: int) -> list[int]:
    """Ray's rung epochs, ascending (its own formula, float rounding included)."""
    n = int(np.log(max_t / grace) / np.log(rf) + 1)
    return sorted(int(grace * rf ** k) for k in range(n))


@dataclass
class Curve:
    """What the replay needs of one FIFO trial."""

    key: tuple                      # the configuration (sweeplib.params_key)
    values: dict[int, float]        # epoch -> val_iou
    offsets: dict[int, float]       # epoch -> seconds from the trial's start to that epoch
    tail: float = 0.0               # seconds from the last epoch to the trial's end

    def metric(self, epoch: int, kind: str) -> float:
        """The rung metric at ``epoch``: ``last`` = val_iou then, ``best`` = best so far."""
        if kind == "best":
            seen = [v for e, v in self.values.items() if e <= epoch and not math.isnan(v)]
            return max(seen) if seen else math.nan
        return self.values.get(epoch, math.nan)


@dataclass
class Outcome:
    stop_epoch: dict[tuple, int] = field(default_factory=dict)   # key -> last epoch trained
    stopped: set[tuple] = field(default_factory=set)             # keys stopped before max_t
    compute_s: dict[tuple, float] = field(default_factory=dict)  # key -> trial seconds

    def best(self, curves: Sequence[Curve]) -> float:
        """Best val_iou any trial reached within the epochs it trained."""
        return max(max((v for e, v in c.values.items() if e <= self.stop_epoch[c.key]),
                       default=math.nan) for c in curves)


def judge(rungs: dict[int, dict[tuple, float]], key: tuple, epoch: int, value: float,
          rf: float) -> bool:
    """Ray's rule at one rung: True to continue. Records ``value`` at the rung."""
    recorded = rungs.get(epoch)
    if recorded is None or key in recorded:
        return True
    go = True
    if recorded:
        cutoff = float(np.nanpercentile(list(recorded.values()), (1 - 1 / rf) * 100))
        go = not value < cutoff
    recorded[key] = value
    return go


def replay(curves: Sequence[Curve], *, slots: int, grace: int, max_t: int, rf: float = 3,
           metric: str = "last") -> Outcome:
    """Simulate an ASHA sweep of ``curves`` (in start order) on ``slots`` slots."""
    rungs: dict[int, dict[tuple, float]] = {m: {} for m in milestones(grace, rf, max_t)}
    out = Outcome()
    queue: list[tuple[float, int, int]] = []  # (time, trial index, epoch)
    pending = list(range(len(curves)))[::-1]

    def start(index: int, now: float) -> None:
        c = curves[index]
        for e in range(1, max_t + 1):
            if e not in c.offsets:
                raise ValueError(f"trial {c.key} has no epoch {e} to replay")
        heapq.heappush(queue, (now + c.offsets[1], index, 1))

    for _ in range(min(slots, len(pending))):
        start(pending.pop(), 0.0)
    while queue:
        now, i, epoch = heapq.heappop(queue)
        c = curves[i]
        go = judge(rungs, c.key, epoch, c.metric(epoch, metric), rf)
        if go and epoch < max_t:
            heapq.heappush(queue, (now - c.offsets[epoch] + c.offsets[epoch + 1], i, epoch + 1))
            continue
        out.stop_epoch[c.key] = epoch
        if epoch < max_t:
            out.stopped.add(c.key)
        out.compute_s[c.key] = c.offsets[epoch] + c.tail
        if pending:
            start(pending.pop(), now + c.tail)
    return out


def replay_order(curves: Sequence[Curve], arrivals: Sequence[tuple[tuple, int]], *,
                 grace: int, max_t: int, rf: float = 3, metric: str = "last"
                 ) -> dict[tuple, bool]:
    """Ray's rule applied in a given arrival order (``(key, epoch)`` as a real sweep logged
    them): per configuration, whether the rule would stop it at one of those epochs."""
    by = {c.key: c for c in curves}
    rungs: dict[int, dict[tuple, float]] = {m: {} for m in milestones(grace, rf, max_t)}
    stopped: dict[tuple, bool] = {k: False for k, _ in arrivals}
    for key, epoch in arrivals:
        if epoch < max_t and not judge(rungs, key, epoch, by[key].metric(epoch, metric), rf):
            stopped[key] = True
    return stopped
