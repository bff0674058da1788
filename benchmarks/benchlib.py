"""Helpers shared by the benchmark scripts: the machine description, rows, timing, ranks.

A benchmark row is a dict ``{"name", "value", "unit", "goal", "command"}``; a row that is one
of the suite's ratios also has ``"key"`` (a stable identifier) and ``"met"`` (True, False, or
None for an informational figure). Standard library only (plus torch, imported lazily), so
the suite runner can describe the machine before anything heavy is loaded.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Sequence
from typing import Any


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpus_available() -> int:
    """CPUs this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def machine_info(device: str) -> dict[str, Any]:
    """What a figure was measured on: CPU model and cores, torch, the GPU if any, the load."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": cpus_available(), "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "device": device, "gpu": None, "load_1min": load_average(),
    }
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return info


def machine_line(info: dict[str, Any]) -> str:
    load = info.get("load_1min")
    return (f"{info['cpu']}, {info['cores']} cores, torch {info['torch']} "
            f"({info['torch_threads']} threads), python {info['python']}, "
            f"GPU: {info['gpu'] or 'none'}"
            + (f", load average {load:.1f}" if load is not None else ""))


def ratio_row(key: str, name: str, value: float | None, goal: str, met: bool | None,
              command: str, unit: str = "x", **extra: Any) -> dict[str, Any]:
    """A row of the suite's ratio table (``met`` None: informational, no goal)."""
    return {"key": key, "name": name, "value": value, "unit": unit, "goal": goal, "met": met,
            "command": command, **extra}


def figure_row(name: str, value: float | None, unit: str, command: str,
               goal: str = "reference") -> dict[str, Any]:
    """A raw figure behind a ratio (images/s, seconds, ...)."""
    return {"name": name, "value": value, "unit": unit, "goal": goal, "command": command}


def at_least(value: float | None, target: float) -> bool | None:
    return None if value is None or math.isnan(value) else value >= target


def at_most(value: float | None, target: float) -> bool | None:
    return None if value is None or math.isnan(value) else value <= target


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson on tie-averaged ranks); NaN when undefined (fewer
    than 3 pairs, or one side constant)."""
    if len(x) != len(y):
        raise ValueError("spearman needs two sequences of the same length")
    if len(x) < 3:
        return math.nan
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return math.nan
    return cov / math.sqrt(vx * vy)


def format_value(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if unit in ("abs",) or (value != 0 and abs(value) < 0.01):
            return f"{value:.2g}"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def print_rows(rows: Sequence[dict[str, Any]], file=None) -> None:
    """A plain table of rows (name, value, unit, goal) for the single-benchmark scripts."""
    if not rows:
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        met = r.get("met")
        mark = "" if met is None else ("  [met]" if met else "  [NOT met]")
        print(f"{r['name']:<{width}}  {format_value(r['value'], r['unit']):>9} "
              f"{r['unit']:<9} goal: {r['goal']}{mark}", file=file)
