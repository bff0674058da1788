"""What a sweep shows while it runs, on stderr.

`SweepProgress` receives the sweep's trial events (start, epoch, end, interrupted) from the
Ray callback and shows them one of two ways:

- in a terminal (stderr is a TTY): one table redrawn in place with rich's ``Live``: elapsed
  time, ETA, ``x of N done`` with running / pending / stopped counts, the best trial so far,
  then one row per trial (running first, then the best ended);
- anywhere else (a pipe, a CI log): one log line per trial start, per epoch that is an ASHA
  rung or the trial's last, per trial end, and a summary line every ``summary_every`` seconds;
  nothing is ever redrawn.

The ETA is ``(pending x D + sum over running trials of max(D - age, 0)) / slots``, with ``D``
the mean duration of the trials ended so far (ASHA-stopped ones included, since later trials
will be stopped as often) and ``slots`` the most trials seen running at once; "unknown" until
one trial has ended. Floats are shown with 3-4 significant digits.
"""

from __future__ import annotations

import atexit
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

log = logging.getLogger(__name__)

COMPLETED = "completed"
RUNNING = "running"
INTERRUPTED = "interrupted"


def fmt_value(value: Any) -> str:
    """A parameter or metric for humans: floats with 4 significant digits, "-" for None."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_iou(value: float | None) -> str:
    return "-" if value is None else f"{float(value):.4f}"


def fmt_duration(seconds: float | None) -> str:
    """``1h02m``, ``4m05s``, ``12s``; "unknown" for None."""
    if seconds is None:
        return "unknown"
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def rung_epochs(max_epochs: int, grace_period: int | None, reduction_factor: int | None) -> set[int]:
    """ASHA's rungs (``grace x rf^k`` below ``max_epochs``) and ``max_epochs`` itself."""
    out = {max_epochs}
    if grace_period and reduction_factor and reduction_factor > 1:
        t = grace_period
        while t < max_epochs:
            out.add(t)
            t *= reduction_factor
    return out


@dataclass
class TrialState:
    """One trial as the progress display knows it."""

    state: str = RUNNING
    epoch: int = 0
    val_iou: float | None = None
    best: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    seconds: float | None = None  # its duration, once ended


@dataclass(frozen=True)
class Counts:
    total: int | None
    done: int
    completed: int
    stopped: int
    failed: int
    running: int
    interrupted: int

    @property
    def pending(self) -> int | None:
        if self.total is None:
            return None
        return max(self.total - self.done - self.running - self.interrupted, 0)


STOPPED_REASONS = frozenset({"asha_stopped", "collapsed"})  # stopped early, by design


class SweepProgress:
    """The sweep's live view. ``total`` is the number of trials the sweep will run (None when
    unknown); ``live`` forces the TTY view on or off (default: whether ``stream``, default
    stderr, is a terminal). ``clock`` is ``time.time`` unless a test gives its own."""

    def __init__(self, total: int | None, max_epochs: int, *, rungs: set[int] | None = None,
                 stream: TextIO | None = None, live: bool | None = None, rows: int = 12,
                 summary_every: float = 60.0, refresh_every: float = 1.0,
                 clock=time.time) -> None:
        self.total = total
        self.max_epochs = max_epochs
        self.rungs = rungs if rungs is not None else {max_epochs}
        self.rows = rows
        self.summary_every = summary_every
        self.refresh_every = refresh_every
        self.clock = clock
        self.trials: dict[str, TrialState] = {}
        self.started_at = clock()
        self.slots = 0
        self._stream = stream
        self._is_live = _is_tty(stream or sys.stderr) if live is None else live
        self._live = None
        self._last_summary = self.started_at
        self._last_refresh = 0.0

    # -- events ----------------------------------------------------------------------------------
    def trial_started(self, tid: str, params: dict[str, Any]) -> None:
        row = self.trials.get(tid)
        if row is None:
            row = self.trials[tid] = TrialState(params=dict(params), started=self.clock())
        else:  # restored after an interruption
            row.state, row.started = RUNNING, self.clock() - (row.seconds or 0.0)
        self.slots = max(self.slots, self.counts().running)
        self._event(f"trial {tid} started {_params(params)}".rstrip())

    def trial_epoch(self, tid: str, epoch: int, val_iou: float | None, best: float | None) -> None:
        row = self.trials.setdefault(tid, TrialState(started=self.clock()))
        row.epoch, row.val_iou, row.best = int(epoch), val_iou, best
        if row.epoch in self.rungs:
            self._event(f"trial {tid} epoch={row.epoch}/{self.max_epochs} "
                        f"val_iou={fmt_iou(val_iou)} best={fmt_iou(best)}")

    def trial_ended(self, tid: str, reason: str, *, best: float | None = None,
                    message: str = "") -> None:
        row = self.trials.setdefault(tid, TrialState(started=self.clock()))
        row.state = reason
        row.seconds = self.clock() - row.started
        if best is not None:
            row.best = best
        why = f" message={message.strip().splitlines()[0][:160]}" if message.strip() else ""
        self._event(f"trial {tid} ended stop_reason={reason} epochs={row.epoch} "
                    f"best_val_iou={fmt_iou(row.best)} time={fmt_duration(row.seconds)}{why}")

    def add_ended(self, tid: str, reason: str, *, epochs: int | None = None,
                  best: float | None = None) -> None:
        """A trial an earlier driver of the sweep ended (resume): counted, not announced,
        and not used for the ETA (its duration is unknown)."""
        self.trials[tid] = TrialState(state=reason, epoch=int(epochs or 0), best=best,
                                      started=self.clock(), seconds=None)

    def trial_interrupted(self, tid: str) -> None:
        row = self.trials.setdefault(tid, TrialState(started=self.clock()))
        row.state = INTERRUPTED
        row.seconds = self.clock() - row.started
        self._event(f"trial {tid} interrupted at epoch={row.epoch} (continues on resume)")

    def tick(self) -> None:
        """Call often (every Tune loop step): redraws the live table at most every
        ``refresh_every`` s; in a pipe, writes the summary line every ``summary_every`` s."""
        now = self.clock()
        if self._is_live:
            if self._live is None:
                self._start_live()
            if now - self._last_refresh >= self.refresh_every:
                self._last_refresh = now
                self._live.update(self.render(), refresh=True)
        elif now - self._last_summary >= self.summary_every:
            self._last_summary = now
            log.info("%s", self.summary_line())

    def close(self) -> None:
        """Draw the final table (TTY) or write the last summary line (pipe)."""
        if self._live is not None:
            self._live.update(self.render(), refresh=True)
            self._live.stop()
            self._live = None
        elif not self._is_live and self.trials:
            log.info("%s", self.summary_line())

    # -- figures ---------------------------------------------------------------------------------
    def counts(self) -> Counts:
        states = [t.state for t in self.trials.values()]
        ended = [s for s in states if s not in (RUNNING, INTERRUPTED)]
        return Counts(total=self.total, done=len(ended),
                      completed=sum(s == COMPLETED for s in ended),
                      stopped=sum(s in STOPPED_REASONS for s in ended),
                      failed=sum(s not in STOPPED_REASONS and s != COMPLETED for s in ended),
                      running=states.count(RUNNING), interrupted=states.count(INTERRUPTED))

    def eta(self) -> float | None:
        """Seconds until the last trial ends (see the module docstring); None until one trial
        has ended or when the trial count is unknown."""
        durations = [t.seconds for t in self.trials.values()
                     if t.state not in (RUNNING, INTERRUPTED) and t.seconds is not None]
        c = self.counts()
        if not durations or c.pending is None:
            return None
        mean = sum(durations) / len(durations)
        now = self.clock()
        left = c.pending * mean + sum(max(mean - (now - t.started), 0.0)
                                      for t in self.trials.values() if t.state == RUNNING)
        return left / max(self.slots, 1)

    def best(self) -> tuple[str, TrialState] | None:
        scored = [(tid, t) for tid, t in self.trials.items() if t.best is not None]
        return max(scored, key=lambda item: item[1].best) if scored else None

    def headline(self) -> str:
        """``3 of 10 done (2 completed, 1 stopped), 2 running, 5 pending``."""
        c = self.counts()
        parts = [f"{c.completed} completed", f"{c.stopped} stopped"]
        if c.failed:
            parts.append(f"{c.failed} failed")
        total = "?" if c.total is None else str(c.total)
        text = f"{c.done} of {total} done ({', '.join(parts)}), {c.running} running"
        if c.pending is not None:
            text += f", {c.pending} pending"
        if c.interrupted:
            text += f", {c.interrupted} interrupted"
        return text

    def summary_line(self) -> str:
        best = self.best()
        best_text = f"best {fmt_iou(best[1].best)} (trial {best[0]})" if best else "best -"
        return (f"progress: {self.headline()}; elapsed {fmt_duration(self.clock() - self.started_at)}, "
                f"ETA {fmt_duration(self.eta())}; {best_text}")

    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows of the table: running trials first, then the best ended."""
        running = [(tid, t) for tid, t in self.trials.items() if t.state == RUNNING]
        ended = sorted(((tid, t) for tid, t in self.trials.items() if t.state != RUNNING),
                       key=lambda item: -(item[1].best if item[1].best is not None else -1.0))
        shown = (running + ended)[: self.rows]
        names = sorted({k for _, t in shown for k in t.params})
        header = ["trial", "state", "epoch", "val_iou", "best", "time", *names]
        now = self.clock()
        body = [[tid, t.state, f"{t.epoch}/{self.max_epochs}", fmt_iou(t.val_iou), fmt_iou(t.best),
                 _age(t, now),
                 *(fmt_value(t.params.get(n)) for n in names)] for tid, t in shown]
        return header, body

    def render(self):
        """The rich renderable of the TTY view (a title line over a table)."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        header, body = self.table_rows()
        table = Table(*header, box=None, pad_edge=False, header_style="bold")
        for row in body:
            table.add_row(*row)
        more = len(self.trials) - len(body)
        lines = [Text(self.summary_line().removeprefix("progress: "))]
        if more:
            lines.append(Text(f"({more} more trials not shown)"))
        return Group(*lines, table)

    # -- output ----------------------------------------------------------------------------------
    def _event(self, line: str) -> None:
        if not self._is_live:
            log.info("%s", line)

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self._stream or sys.stderr)
        self._live = Live(self.render(), console=console, auto_refresh=False,
                          redirect_stdout=False, redirect_stderr=True, transient=False)
        self._live.start()
        # An interrupted sweep never reaches on_experiment_end: give the terminal back anyway.
        atexit.register(self.close)


def _age(t: TrialState, now: float) -> str:
    if t.seconds is not None:
        return fmt_duration(t.seconds)
    return fmt_duration(now - t.started) if t.state == RUNNING else "-"  # ended before a resume


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={fmt_value(v)}" for k, v in sorted(params.items()))


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
