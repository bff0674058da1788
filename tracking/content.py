"""What goes into a run: its name, params, per-epoch metrics, status, text artifacts, and the
sweep summary the parent run gets at the end. Pure functions of camotune's records (and files);
nothing here talks to MLflow except `upload`, which is handed a client."""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from camotune.tracking.secrets import scrub
from camotune.tracking.writer import Lost

# Run status per stop reason (docs/sweeps.md): stopped early by the search = KILLED.
STATUS = {"completed": "FINISHED", "asha_stopped": "KILLED", "collapsed": "KILLED",
          "diverged": "FAILED", "oom": "FAILED", "error": "FAILED"}

# Short names for run names, in the order they appear in a name.
ABBREVIATIONS = {
    "backbone": "", "img_size": "px", "batch_size": "bs", "stage2_batch_size": "bs2",
    "accumulation_steps": "acc", "lr": "lr", "stage2_lr": "lr2", "lr_scaling": "scale",
    "backbone_lr_scale": "bblr", "weight_decay": "wd", "warmup_steps": "wu", "scheduler": "sched",
    "min_lr": "minlr", "grad_clip": "clip", "use_ema": "ema", "ema_decay": "emad",
    "ema_warmup": "emawu", "deep_supervision": "ds", "deep_supervision_weight": "dsw",
    "progressive_unfreeze": "pu", "num_experts": "exp", "top_k": "k", "aug_strength": "aug",
    "epochs": "ep", "stage1_epochs": "s1ep", "seed": "seed",
}
TEXT_SUFFIXES = frozenset({".yaml", ".yml", ".txt", ".csv", ".json", ".jsonl", ".patch", ".log"})
MAX_TAG = 4000     # MLflow takes 8000 characters per tag value; keep messages readable
MAX_PARAM = 5000   # MLflow takes 6000 per param value and rejects the whole batch beyond
PARAMS_PER_CALL = 100  # MLflow's log_batch limit


def run_name(params: Mapping[str, Any], fallback: str = "run") -> str:
    """A short name from the varied params, e.g. ``bs8-acc2-lr3.2e-4-ema-ds``: known fields in
    a fixed order, booleans by name when true (left out when false), floats with two
    significant digits. ``fallback`` when nothing is left."""
    order = list(ABBREVIATIONS)
    keys = sorted(params, key=lambda k: (order.index(k) if k in order else len(order), k))
    parts = []
    for key in keys:
        value = params[key]
        abbr = ABBREVIATIONS.get(key, "".join(w[:1] for w in key.split("_")))
        if isinstance(value, bool):
            if value:
                parts.append(abbr or key)
        elif isinstance(value, (int, float)):
            parts.append(f"{abbr or key}{_number(value)}")
        else:
            parts.append(f"{abbr}_{value}" if abbr else str(value))
    return "-".join(parts) or fallback


def _number(value: float) -> str:
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e6):
        return str(int(value))
    if 0.01 <= abs(value) < 1000:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def param_value(value: Any) -> str:
    text = scrub(str(value))
    return text if len(text) <= MAX_PARAM else text[:MAX_PARAM] + " ..."


def config_params(config: Mapping[str, Any], lr_stage1: Any, lr_stage2: Any,
                  prefix: str = "") -> dict[str, str]:
    """Every TrainConfig field (``prefix`` + name) and the resolved per-stage LRs."""
    out = {f"{prefix}{k}": param_value(v) for k, v in config.items()}
    out[f"{prefix}lr_stage1"] = param_value(lr_stage1)
    out[f"{prefix}lr_stage2"] = param_value(lr_stage2)
    return out


def sweep_params(settings) -> dict[str, str]:
    """The parent run's params: the space (one param per searched field, fixed value and
    design), searcher, scheduler and its settings, resources, stopper thresholds, and every
    base config field as ``base.<field>``."""
    import json

    space = settings.space
    out: dict[str, Any] = {
        "space": space.name, "space.source": settings.space_source,
        "space.description": " ".join(space.description.split()),
        "searcher": settings.searcher, "scheduler": settings.scheduler,
        "grace_period": settings.grace_period, "reduction_factor": settings.reduction_factor,
        "rungs": ",".join(map(str, settings.rung_epochs)) or None,
        "rung_metric": settings.rung_metric, "brackets": settings.brackets,
        "num_samples": settings.num_samples, "max_epochs": settings.max_epochs,
        "seed": settings.seed, "time_budget_s": settings.time_budget_s,
        "max_concurrent": settings.max_concurrent, "cpus_per_trial": settings.cpus_per_trial,
        "gpus_per_trial": settings.gpus_per_trial, "keep_checkpoints": settings.keep_checkpoints,
        "points": len(settings.points), "warm_start": settings.warm_start,
    }
    for name, dist in space.params.items():
        out[f"space.params.{name}"] = json.dumps(dist.to_dict(), separators=(",", ":"))
    for name, value in space.fixed.items():
        out[f"space.fixed.{name}"] = value
    if space.design is not None:
        out["space.design"] = json.dumps(space.design.to_dict(), separators=(",", ":"))
    for name, value in dataclasses.asdict(settings.collapse).items():
        out[f"collapse.{name}"] = value
    base = settings.base
    out.update(config_params({k: getattr(base, k) for k in base.__dataclass_fields__},
                             base.resolved_lr(1), base.resolved_lr(2), prefix="base."))
    return {k: param_value(v) for k, v in out.items() if v is not None}


def epoch_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """The numeric, finite values of a metrics row (empty values skipped)."""
    out = {}
    for key, value in row.items():
        if value is None or isinstance(value, (str, bool)):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


def tag_value(value: Any) -> str:
    text = scrub(str(value))
    return text if len(text) <= MAX_TAG else text[:MAX_TAG] + " ..."


def chunks(items: list, size: int = PARAMS_PER_CALL) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def upload(client, run_id: str, path: Path, artifact_path: str | None = None) -> None:
    """Upload a file or folder; text files go through `scrub` first. Raises `Lost` when
    ``path`` no longer exists (e.g. a checkpoint deleted by ``--keep-checkpoints``)."""
    path = Path(path)
    if not path.exists():
        raise Lost(f"{path} no longer exists")
    with tempfile.TemporaryDirectory(prefix="camotune-mlflow-") as tmp:
        if path.is_dir():
            copy = Path(tmp, path.name)
            shutil.copytree(path, copy)
            for file in copy.rglob("*"):
                if file.is_file() and file.suffix in TEXT_SUFFIXES:
                    _scrub_file(file)
            client.log_artifacts(run_id, str(copy), artifact_path or path.name)
            return
        if path.suffix in TEXT_SUFFIXES:
            copy = Path(tmp, path.name)
            shutil.copyfile(path, copy)
            _scrub_file(copy)
            path = copy
        client.log_artifact(run_id, str(path), artifact_path)


def upload_text(client, run_id: str, name: str, text: str, artifact_path: str | None = None) -> None:
    """Upload ``text`` (scrubbed) as the artifact ``name``."""
    with tempfile.TemporaryDirectory(prefix="camotune-mlflow-") as tmp:
        file = Path(tmp, name)
        file.write_text(scrub(text))
        client.log_artifact(run_id, str(file), artifact_path)


def _scrub_file(file: Path) -> None:
    try:
        text = file.read_text()
    except UnicodeDecodeError:
        return
    clean = scrub(text)
    if clean != text:
        file.write_text(clean)


# stop reasons grouped into the parent run's few counts (each reason's own count is a tag)
_STOPPED_EARLY = frozenset({"asha_stopped", "collapsed"})
_FAILED = frozenset({"error", "oom", "diverged"})


def sweep_summary(events: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, str]]:
    """The parent run's final metrics and tags from ``trials.jsonl`` events.

    Few metrics, so that the parent's chart view reads at a glance: ``best_val_iou`` and the
    epoch it was reached at (``best_epoch``), ``trials_started``, ``trials_completed``,
    ``trials_stopped_early`` (ASHA or the collapse stopper), ``trials_failed`` (error, out of
    memory, diverged), ``trials_orphaned`` and ``compute_seconds`` (the end events' summed
    compute). Tags: ``camotune.best_trial_id`` and ``camotune.trials_by_stop_reason``
    (``asha_stopped=2 completed=3``); the best trial's other figures are on its own run."""
    started = {e["trial_id"] for e in events if e.get("event") == "start"}
    ends = {e["trial_id"]: e for e in events if e.get("event") == "end"}
    reasons: dict[str, int] = {}
    for end in ends.values():
        reason = str(end.get("stop_reason"))
        reasons[reason] = reasons.get(reason, 0) + 1
    metrics: dict[str, float] = {
        "trials_started": float(len(started)),
        "trials_completed": float(reasons.get("completed", 0)),
        "trials_stopped_early": float(sum(n for r, n in reasons.items() if r in _STOPPED_EARLY)),
        "trials_failed": float(sum(n for r, n in reasons.items() if r in _FAILED)),
        "trials_orphaned": float(sum(e.get("event") == "orphaned" for e in events)),
        "compute_seconds": float(sum(float(e.get("compute_seconds", e.get("gpu_seconds")) or 0.0)
                                     for e in ends.values())),
    }
    tags: dict[str, str] = {}
    if reasons:
        tags["camotune.trials_by_stop_reason"] = " ".join(
            f"{r}={n}" for r, n in sorted(reasons.items()))
    scored = [e for e in ends.values() if e.get("best_val_iou") is not None]
    if scored:
        best = max(scored, key=lambda e: float(e["best_val_iou"]))
        metrics["best_val_iou"] = float(best["best_val_iou"])
        tags["camotune.best_trial_id"] = best["trial_id"]
        rows = [e["metrics"] for e in events if e.get("event") == "epoch"
                and e.get("trial_id") == best["trial_id"] and e["metrics"].get("val_iou") is not None]
        if rows:
            top = max(rows, key=lambda r: float(r["val_iou"]))
            if top.get("epoch") is not None:
                metrics["best_epoch"] = float(top["epoch"])
    return metrics, tags
