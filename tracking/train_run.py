"""The MLflow run of one ``camotune train --tracking-uri U --experiment E``: the content of a
sweep's trial run (every TrainConfig field, resolved LRs, per-epoch metrics at step = epoch,
config.yaml, command.txt, history.csv, preview.png, stop reason, status) and the
reproducibility record (tags, pip freeze, git diff), with no parent run. The training process
is the only writer of its run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from camotune.tracking.content import config_params, run_name
from camotune.tracking.repro import dataset_fingerprint
from camotune.tracking.runs import (
    HISTORY_FILE,
    RUN_FILES,
    RunLog,
    ensure_experiment,
    repro_tags,
)
from camotune.tracking.writer import TrackingWriter, check_reachable, shown

log = logging.getLogger(__name__)

# The fields a training run is named by (a sweep names its trials by what varies).
TRAIN_NAME_FIELDS = ("img_size", "batch_size", "accumulation_steps", "lr", "use_ema",
                     "deep_supervision")


class TrainRunTracker:
    """The MLflow run of one ``camotune train`` (the same content as a sweep's trial run, no
    parent). Created before training: an unreachable server raises :class:`BadInput`.
    ``log_epoch`` is fit's report callback; ``finish`` closes the run (FINISHED, or FAILED /
    KILLED with the stop reason when ``error`` is given)."""

    def __init__(self, uri: str, experiment: str, cfg, *, timeout: float = 5.0) -> None:
        from camotune.trainer.config import to_dict

        check_reachable(uri, timeout=timeout)
        self.uri = uri
        self.writer = TrackingWriter(uri)
        self.run = RunLog(self.writer, Path(cfg.checkpoint_dir), "train run")
        self._experiment_id: str | None = None

        def experiment_id(client) -> str:
            if self._experiment_id is None:
                self._experiment_id = ensure_experiment(client, experiment, uri)
            return self._experiment_id

        name = run_name({k: getattr(cfg, k) for k in TRAIN_NAME_FIELDS}, fallback="train")
        tags = {**repro_tags(), "camotune.kind": "train",
                "camotune.checkpoint_dir": str(Path(cfg.checkpoint_dir).resolve()),
                "camotune.dataset_path": cfg.dataset_path,
                "camotune.dataset_hash": dataset_fingerprint(cfg.dataset_path)}
        if cfg.resume_from:
            tags["camotune.resumed_from"] = cfg.resume_from
        self.run.create(experiment_id, name, tags)
        self.run.log_params(config_params(to_dict(cfg), cfg.resolved_lr(1), cfg.resolved_lr(2)))
        self.run.upload_repro()
        log.info("mlflow: run %s in experiment %s (%s)", self.run.run_id, experiment, shown(uri))

    def log_epoch(self, row: dict[str, Any]) -> None:
        """fit's report callback: one metric batch per epoch (rank 0 only under DDP)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        self.run.log_epoch(row)

    def finish(self, error: BaseException | None = None) -> None:
        """Upload the run's files and close it; never raises for tracking failures."""
        from camotune.errors import JobFailed

        if isinstance(error, KeyboardInterrupt):
            reason, status = None, "KILLED"
        elif error is None:
            reason, status = "completed", "FINISHED"
        elif isinstance(error, JobFailed):
            reason, status = error.reason, "FAILED"
        else:
            oom = "out of memory" in str(error).lower() or isinstance(error, MemoryError)
            reason, status = ("oom" if oom else "error"), "FAILED"
        from camotune.trainer.history import read_history

        self.run.fill_from_history()
        epochs = len(read_history(self.run.folder / HISTORY_FILE))
        tags: dict[str, Any] = {"camotune.epochs": epochs}
        if reason is not None:
            tags["camotune.stop_reason"] = reason
        else:
            tags["camotune.interrupted"] = "true"
        if error is not None and not isinstance(error, KeyboardInterrupt):
            tags["camotune.message"] = f"{type(error).__name__}: {error}"
        self.run.set_tags(tags)
        for name in RUN_FILES:
            self.run.upload(name, missing_ok=True)
        self.run.end(status)
        self.writer.flush(force=True)
        log.info("mlflow: run %s %s (%s) tracking_errors=%d unsent=%d", self.run.run_id,
                 status, shown(self.uri), self.writer.errors,
                 self.writer.pending + self.writer.lost)
