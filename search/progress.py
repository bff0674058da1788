"""The live table a sweep prints while it runs: one row per trial, what it is doing now."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _num(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _param(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class StatusTable:
    """Prints at most every ``interval`` seconds (and when forced): trial, state, epoch,
    val_iou, best, then the searched parameters. Running trials first, then the best ended."""

    def __init__(self, max_epochs: int, *, interval: float = 15.0, rows: int = 12,
                 stream: TextIO | None = None) -> None:
        self.max_epochs = max_epochs
        self.interval = interval
        self.rows = rows
        self.stream = stream
        self._last_print = 0.0

    def maybe_print(self, trials: dict[str, dict[str, Any]], *, force: bool = False) -> None:
        now = time.time()
        if not trials or (not force and now - self._last_print < self.interval):
            return
        self._last_print = now
        (self.stream or sys.stderr).write(self.render(trials) + "\n")

    def render(self, trials: dict[str, dict[str, Any]]) -> str:
        """``trials``: id -> {"state", "epoch", "val_iou", "best", "params"}."""
        running = [t for t in trials.items() if t[1]["state"] == "running"]
        ended = sorted((t for t in trials.items() if t[1]["state"] != "running"),
                       key=lambda t: -(t[1].get("best") or -1.0))
        counts: dict[str, int] = {}
        for _, t in trials.items():
            counts[t["state"]] = counts.get(t["state"], 0) + 1
        shown = (running + ended)[: self.rows]
        names = sorted({k for _, t in shown for k in t.get("params", {})})
        header = ["trial", "state", "epoch", "val_iou", "best", *names]
        body = [[tid, t["state"], f"{t.get('epoch') or 0}/{self.max_epochs}",
                 _num(t.get("val_iou")), _num(t.get("best")),
                 *(_param(t.get("params", {}).get(n, "")) for n in names)] for tid, t in shown]
        widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
        line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        more = len(trials) - len(shown)
        lines = [f"-- trials: {summary}" + (f" ({more} more not shown)" if more else ""),
                 line(header), *map(line, body)]
        return "\n".join(lines)
