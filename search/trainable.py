"""The Ray Tune trainable: it only adapts `fit` to Tune.

A trial is ``fit(base + fixed + params)`` writing into ``<sweep>/trials/<trial_id>/``. Each
epoch it reports the metric keys with a tiny checkpoint that points at that folder's
``last.pt`` (the real checkpoint is never copied) and names the epoch last.pt holds (with
``--checkpoint-every K`` an earlier one), so a restored trial resumes exactly from there,
replaying at most K-1 epochs. The sweep's ASHA rungs and the last epoch always write last.pt.
Trials run one after another in one process when Tune reuses the actor: each trial frees its
model, optimizer and loaders before the next starts. A failure is written to ``outcome.json`` before it propagates, so the driver can tell
``diverged`` and ``oom`` from other errors. ``node.json`` records where the trial ran. Only
files are written here: the driver is the one writer of ``trials.jsonl`` and MLflow.

With ``--workers-per-trial`` above 1 the trial coordinates a Ray Train run instead of training
itself (search/distributed.py); the report and its pointer checkpoint are the same.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import tempfile
import traceback
from pathlib import Path
from typing import Any

from camotune.errors import BadInput, JobFailed
from camotune.trainer.config import TrainConfig

OUTCOME_FILE = "outcome.json"
ENDED_FILE = "ended.json"  # written by the driver when it records the trial's end
POINTER_FILE = "camotune_checkpoint.json"


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig values a trial's Tune config sets (design spaces nest them)."""
    return dict(config["params"]) if "params" in config else dict(config)


def trial_config(settings, params: dict[str, Any], trial_id: str) -> TrainConfig:
    """The exact TrainConfig of a trial: base + the space's fixed values + its params, its own
    checkpoint folder, ``--threads`` = the CPUs it was given, and no more data-loader
    processes than its other CPUs."""
    cfg = settings.space.apply(settings.base, params)
    cpus = max(1, int(settings.cpus_per_trial))
    return dataclasses.replace(
        cfg, checkpoint_dir=str(settings.sweep_dir / "trials" / trial_id), threads=cpus,
        num_workers=min(cfg.num_workers, cpus - 1))


def write_json(trial_dir: Path, name: str, obj: Any) -> None:
    """``trial_dir/name`` as JSON, atomically (readers decide on its presence)."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    tmp = trial_dir / (name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, trial_dir / name)


def write_outcome(trial_dir: Path, reason: str, message: str) -> None:
    write_json(trial_dir, OUTCOME_FILE, {"stop_reason": reason, "message": message})


def record_failure(trial_dir: Path, exc: BaseException, prefix: str = "") -> None:
    """Write why the trial failed, unless a process of the trial already did (the first
    rank of a multi-worker trial to fail says why; the others fail on its broken group)."""
    if read_outcome(trial_dir) is None:
        reason, message = failure_reason(exc)
        write_outcome(trial_dir, reason, prefix + message)


def write_ended(trial_dir: Path, reason: str) -> None:
    write_json(trial_dir, ENDED_FILE, {"stop_reason": reason})


def read_outcome(trial_dir: Path) -> dict[str, Any] | None:
    path = trial_dir / OUTCOME_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_trial(config: dict[str, Any], settings) -> None:
    """The function trainable (wrapped with `tune.with_parameters(run_trial, settings=...)`)."""
    from ray import tune

    # One line per checkpoint from Ray's storage layer would drown the sweep's own output.
    from camotune.search import compat
    from camotune.trainer.loop import fit

    compat.quiet(compat.TRAIN_STORAGE_LOGGER)
    # What is loaded by now (torch, timm, Ray: ~0.5 M objects) lives as long as the process:
    # out of the collector's sight, a full collection (the one at the end of the trial, and
    # the automatic ones while it trains) skips them: ~0.1 s instead of ~0.4 s on a 2-core CPU.
    gc.freeze()
    trial_id = tune.get_context().get_trial_id()
    try:
        cfg = trial_config(settings, trial_params(config), trial_id)
    except BadInput as exc:  # a sampled combination the config rejects: this trial fails
        record_failure(settings.sweep_dir / "trials" / trial_id, exc)
        raise
    trial_dir = Path(cfg.checkpoint_dir)
    last = trial_dir / "last.pt"
    if last.is_file():
        # Restored by Tune (its checkpoint points here) or restarted without one: either way
        # last.pt is the state after the trial's last finished epoch.
        cfg = dataclasses.replace(cfg, resume_from=str(last))

    milestones = checkpoint_epochs(settings, cfg)

    def report(row: dict[str, Any]) -> None:
        metrics = {k: v for k, v in row.items() if v is not None}
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, POINTER_FILE).write_text(json.dumps(
                {"last": str(last), "epoch": row["epoch"],
                 "last_epoch": last_checkpoint_epoch(cfg, int(row["epoch"]), milestones)}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    if (trial_dir / ENDED_FILE).is_file():
        # The driver recorded this trial's end before the sweep was interrupted, but Ray
        # restored it from an older saved state: hand Ray its last result, train nothing.
        from camotune.trainer.history import read_history

        rows = read_history(trial_dir / "history.csv")
        if not rows:  # it failed before its first epoch: let Ray see it fail again
            raise RuntimeError(f"trial {trial_id} had already ended before the resume")
        report(rows[-1])
        return

    try:
        if cfg.workers_per_trial > 1:
            from camotune.search.distributed import run_workers

            run_workers(cfg, cpus=settings.cpus_per_trial, gpus=settings.gpus_per_trial,
                        storage=settings.sweep_dir / f"ray_{trial_id}", report=report,
                        checkpoint_epochs=milestones)
        else:
            from camotune.search.distributed import node_record, write_nodes
            from camotune.tracking.repro import write_environment

            write_nodes(trial_dir, [node_record(0)])
            write_environment(trial_dir)  # the trial's own host and GPU for its MLflow run
            fit(cfg, report=report, overwrite=True, checkpoint_epochs=milestones)
    except Exception as exc:
        record_failure(trial_dir, exc)
        raise
    finally:
        # With reused actors the next trial runs in this process: let go of this one's
        # model, optimizer, loaders and tensors now, not at some later collection.
        gc.collect()


def checkpoint_epochs(settings, cfg: TrainConfig) -> frozenset[int]:
    """Epochs at which a trial always writes last.pt: the sweep's ASHA rungs (every bracket's)
    and its last epoch, whatever ``--checkpoint-every``."""
    return frozenset([*settings.rung_epochs, cfg.epochs])


def last_checkpoint_epoch(cfg: TrainConfig, epoch: int, milestones: frozenset[int]) -> int:
    """The epoch whose state last.pt holds once ``epoch`` is done (`checkpoint_due`)."""
    from camotune.trainer.loop import checkpoint_due

    return next((e for e in range(epoch, 0, -1) if checkpoint_due(cfg, e, milestones)), 0)


def failure_reason(exc: BaseException) -> tuple[str, str]:
    """``(stop_reason, message)`` of a trial that raised ``exc``: a `JobFailed`'s reason
    (diverged, oom), ``oom`` for out-of-memory errors, else ``error`` with a short traceback."""
    if isinstance(exc, JobFailed):
        return exc.reason, str(exc)
    if isinstance(exc, BadInput):
        return "error", str(exc)
    reason = "oom" if _is_oom_text(exc) else "error"
    return reason, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"


def _is_oom_text(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower() or isinstance(exc, MemoryError)
