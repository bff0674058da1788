"""The GPU benchmark's results as ratios with goals, and as a markdown page."""

from __future__ import annotations

from typing import Any


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _fmt(v: Any, digits: int = 3) -> str:
    x = _num(v)
    if x is None:
        return "-" if v is None else str(v)
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:.0f}"


def _ceiling(data: dict, precision: str, batch: int) -> float | None:
    table = (data["sections"].get("ceiling") or {}).get(precision) or {}
    return _num(table.get(batch, table.get(str(batch))))


def summary(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows {name, value, goal, met} (met None: informational)."""
    s, sec = data["settings"], data["sections"]
    size = s["size"]
    rows: list[dict[str, Any]] = []
    for r in sec.get("step") or []:
        ceil = _ceiling(data, r["precision"], r["batch"])
        rate = _num(r.get("images_per_s"))
        if ceil is None or rate is None:
            continue
        ratio = rate / ceil
        device_input = r["input"] == "device"
        goal, met = ((">= 0.9", ratio >= 0.9) if device_input and size == 384 else
                     (">= 0.9 (at 384 px)", None) if device_input else
                     ("informational (input copy + normalise included)", None))
        syncs = r.get("syncs_per_micro_batch")
        rows.append({
            "name": f"step / ceiling, {r['precision']} batch {r['batch']} at {size} px, input "
                    f"{r['input']}, accumulation {r.get('accumulation')}"
                    + (f" (host syncs per micro-batch {syncs:.2g}: "
                       f"{_sites(r.get('sync_sites'))})" if syncs is not None else ""),
            "value": ratio, "goal": goal, "met": met})
    batches = [b for b in s["batches"]
               if _ceiling(data, "bf16", b) and _ceiling(data, "fp32", b)]
    if batches:
        b = max(batches)
        rows.append({"name": f"ceiling bf16 / fp32 at batch {b}, {size} px",
                     "value": _ceiling(data, "bf16", b) / _ceiling(data, "fp32", b),
                     "goal": "informational", "met": None})
    comp = sec.get("compile") or {}
    for b, v in (comp.get("images_per_s") or {}).items():
        eager = _ceiling(data, "bf16", int(b))
        if eager and _num(v):
            rows.append({"name": f"ceiling bf16+compile / bf16 eager at batch {b} (compile "
                                 f"{_fmt((comp.get('compile_s') or {}).get(b))} s)",
                         "value": float(v) / eager, "goal": "informational", "met": None})
    phases = {p["processes"]: p for p in sec.get("packing") or []}
    if 1 in phases:
        one = phases[1]["aggregate_images_per_s"]
        for n in sorted(phases):
            if n == 1:
                continue
            ratio = phases[n]["aggregate_images_per_s"] / one
            goal, met = (">= 1.5", ratio >= 1.5) if n == 4 else ("informational", None)
            rows.append({"name": f"{n} packed {s['small_backbone']} processes / 1, aggregate "
                                 f"images/s (batch {s['pack_batch']}, {s['pack_size']} px)",
                         "value": ratio, "goal": goal, "met": met})
    for r in sec.get("max_batch") or []:
        rows.append({"name": f"largest bf16 training batch at {r['size']} px "
                             f"(first OOM: {r.get('first_oom')}, cap {r.get('cap')})",
                     "value": r.get("max_batch"), "goal": "informational (packing)",
                     "met": None})
    return rows


def _sites(sites: dict | None) -> str:
    if not sites:
        return "none"
    return ", ".join(f"{k} x{v}" for k, v in sorted(sites.items(), key=lambda kv: -kv[1]))


def markdown(data: dict[str, Any]) -> str:
    s, m, sec = data["settings"], data["machine"], data["sections"]
    mode = "quick" if s["quick"] else "full"
    lines = [f"# camotune GPU benchmark ({mode})", "",
             f"Machine: {m.get('gpu') or 'no GPU'}"
             + (f" ({m.get('gpu_memory_gib')} GiB, CUDA {m.get('cuda')})" if m.get("gpu") else "")
             + f"; {m['cpu']}, {m['cores']} cores; Python {m['python']}, torch {m['torch']}, "
             f"timm {m['timm']}; device {m['device']}. Wall time {data.get('wall_s')} s "
             f"(budget {s['budget_s']:.0f} s).", "",
             "| ratio | value | goal | met |", "| --- | --- | --- | --- |"]
    for r in summary(data):
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {r['name']} | {_fmt(r['value'])} | {r['goal']} | {met} |")
    ceiling = sec.get("ceiling") or {}
    comp = (sec.get("compile") or {}).get("images_per_s") or {}
    if ceiling:
        precisions = list(ceiling) + (["bf16+compile"] if comp else [])
        lines += ["", f"## Ceiling: forward+backward images/s, {s['backbone']} at {s['size']} px",
                  "", "| batch | " + " | ".join(precisions) + " |",
                  "| --- |" + " --- |" * len(precisions)]
        for b in s["batches"]:
            cells = [_fmt((ceiling.get(p) or {}).get(b, (ceiling.get(p) or {}).get(str(b))))
                     for p in ceiling]
            if comp:
                cells.append(_fmt(comp.get(b, comp.get(str(b)))))
            lines.append(f"| {b} | " + " | ".join(cells) + " |")
    if sec.get("step"):
        lines += _table("Training step (GradientAccumulator + CamoLoss + AdamW)",
                        ["precision", "batch", "input", "images/s", "peak GiB",
                         "host syncs / micro-batch", "sync sites"],
                        [[r["precision"], r["batch"], r["input"], _fmt(r.get("images_per_s")),
                          _fmt(r.get("peak_gib")), _fmt(r.get("syncs_per_micro_batch")),
                          _sites(r.get("sync_sites"))] for r in sec["step"]])
    if sec.get("max_batch"):
        lines += _table("Largest bf16 training batch (2 steps, AdamW state included)",
                        ["size", "max batch", "first OOM", "peak GiB at max", "GiB per image",
                         "fixed GiB", "probes (batch, fits)"],
                        [[r["size"], r.get("max_batch"), r.get("first_oom"),
                          _fmt(r.get("peak_gib_at_max")), _fmt(r.get("gib_per_image")),
                          _fmt(r.get("fixed_gib")), r.get("probes")] for r in sec["max_batch"]])
    if sec.get("packing"):
        lines += _table(f"Packing: {s['small_backbone']} training processes on one device "
                        f"(bf16 on CUDA, batch {s['pack_batch']}, {s['pack_size']} px, "
                        f"{s['pack_seconds']:.0f} s each)",
                        ["processes", "aggregate images/s", "per process",
                         "peak GiB per process"],
                        [[p["processes"], _fmt(p["aggregate_images_per_s"]),
                          ", ".join(_fmt(v) for v in p["per_process"]),
                          ", ".join(_fmt(v) for v in p["peak_gib"])] for p in sec["packing"]])
    if sec.get("compile"):
        c = sec["compile"]
        lines += ["", f"Compile: {c.get('status')}, {_fmt(c.get('wall_s'))} s in all."]
    if data.get("errors"):
        lines += ["", "## Errors", ""] + [f"- {k}: {v}" for k, v in data["errors"].items()]
    return "\n".join(lines) + "\n"


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown section: blank line, ``## title``, blank line, the table."""
    return ["", f"## {title}", "", "| " + " | ".join(columns) + " |",
            "|" + " --- |" * len(columns)] + ["| " + " | ".join(str(c) for c in r) + " |"
                                               for r in rows]
