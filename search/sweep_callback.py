"""The driver-side record of a sweep: ``trials.jsonl`` and the one MLflow writer.

`SweepCallback` is a Ray Tune callback running in the driver. At every trial start, epoch and
end it appends one JSON line to ``trials.jsonl`` (flushed), classifies how each trial ended
(exactly one ``stop_reason``), applies ``--keep-checkpoints``, and forwards the same events to
a tracker (MLflow). Trials themselves only write files in their folders.

``trials.jsonl`` events (see docs/sweeps.md): ``start`` (params, config, lr_stage1/2,
resources, restored), ``epoch`` (metrics, seconds), ``end`` (stop_reason, rung, epochs,
best_val_iou, last_val_iou, gpu_seconds, message, evidence), ``interrupted`` (stopped by the
time budget or Ctrl-C: it continues on resume), ``orphaned`` (started before a crash, after
Ray's last saved state: Ray will not restore it).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from camotune.errors import BadInput
from camotune.search.progress import SweepProgress, rung_epochs
from camotune.search.settings import SweepSettings
from camotune.search.stop_registry import StopRegistry
from camotune.search.trainable import read_outcome, trial_config, trial_params, write_ended
from camotune.sweepdir import TRIALS_DIR, TRIALS_FILE, append_event, read_events
from camotune.tracking.tracker import Tracker
from camotune.trainer.config import to_dict
from camotune.trainer.history import METRIC_KEYS

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    def __init__(self, settings: SweepSettings, registry: StopRegistry,
                 tracker: Tracker | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.tracker = tracker or Tracker()
        self._segment_start: dict[str, float] = {}
        self._prior_seconds: dict[str, float] = {}
        self._last: dict[str, dict[str, Any]] = {}
        self._ended: dict[str, dict[str, Any]] = {}
        self._started: set[str] = set()
        self._orphans_checked = False
        self._workers: dict[str, int] = {}
        self.progress = _progress(settings)

    # -- state ---------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.settings.sweep_dir / TRIALS_FILE

    def setup(self, **info: Any) -> None:
        """Load what an earlier driver of this sweep recorded (resume)."""
        from camotune.search import interrupt

        interrupt.watch()  # Ray's SIGINT handler is in place by now
        self._segment_start.clear()
        self._orphans_checked = False
        for event in read_events(self.path):
            tid = event.get("trial_id")
            if tid is None:
                continue
            if event["event"] == "start":
                self._started.add(tid)
                self._workers[tid] = int(event.get("resources", {}).get("workers", 1))
            elif event["event"] == "epoch":
                self._last[tid] = event["metrics"]
                self._prior_seconds[tid] = float(event.get("seconds", 0.0))
            elif event["event"] == "end":
                self._ended[tid] = event
                self.progress.add_ended(tid, event["stop_reason"], epochs=event.get("epochs"),
                                        best=event.get("best_val_iou"))
        self.tracker.sweep_start(self.settings)

    def seconds(self, trial_id: str) -> float:
        start = self._segment_start.get(trial_id)
        now = 0.0 if start is None else time.time() - start
        return self._prior_seconds.get(trial_id, 0.0) + now

    # -- Tune hooks ----------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        tid = trial.trial_id
        params = trial_params(trial.config)
        try:
            cfg = trial_config(self.settings, params, tid)
        except BadInput:  # the trial itself fails with the message (trainable.run_trial)
            cfg = None
        restored = tid in self._started
        self._started.add(tid)
        self._workers[tid] = cfg.workers_per_trial if cfg is not None else 1
        self._segment_start[tid] = time.time()
        record = {
            "event": "start", "trial_id": tid, "params": params,
            "config": to_dict(cfg) if cfg is not None else {},
            "trial_dir": f"{TRIALS_DIR}/{tid}",
            "lr_stage1": cfg.resolved_lr(1) if cfg is not None else None,
            "lr_stage2": cfg.resolved_lr(2) if cfg is not None else None, "restored": restored,
            "resources": {"cpu": self.settings.cpus_per_trial,
                          "gpu": self.settings.gpus_per_trial,
                          "workers": self._workers[tid]},
        }
        append_event(self.path, record)
        self.progress.trial_started(tid, params)
        self.tracker.trial_start(tid, record)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        if "epoch" not in result:
            return
        tid = trial.trial_id
        if int(result["epoch"]) <= int(self._last.get(tid, {}).get("epoch") or 0):
            return  # an epoch recorded before a resume, reported again
        metrics = {k: _clean(result.get(k)) for k in METRIC_KEYS}
        self._last[tid] = metrics
        append_event(self.path, {"event": "epoch", "trial_id": tid, "epoch": int(result["epoch"]),
                                 "metrics": metrics, "seconds": self.seconds(tid)})
        self.progress.trial_epoch(tid, metrics["epoch"], metrics["val_iou"],
                                  metrics["best_val_iou"])
        self.tracker.trial_epoch(tid, metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        tid = trial.trial_id
        if tid in self._ended:
            return  # ended before a resume; Ray restored it from an older saved state
        last = self._last.get(tid, {})
        stop = self.registry.get(tid)
        if stop is not None:
            self._end(tid, stop["stop_reason"], rung=stop["rung"], evidence=stop["evidence"])
        elif (last.get("epoch") or 0) >= self.settings.max_epochs:
            self._end(tid, "completed")
        else:
            append_event(self.path, {"event": "interrupted", "trial_id": tid,
                                     "epochs": last.get("epoch") or 0,
                                     "seconds": self.seconds(tid)})
            self._prior_seconds[tid] = self.seconds(tid)
            self._segment_start.pop(tid, None)
            self.progress.trial_interrupted(tid)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.progress.tick()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.progress.close()

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        tid = trial.trial_id
        if tid in self._ended:
            return
        outcome = read_outcome(self.trial_dir(tid))
        if outcome is not None:
            reason, message = outcome["stop_reason"], outcome["message"]
        else:
            text = str(trial.get_error() or "the trial's process died")
            reason = "oom" if ("OutOfMemory" in text or "out of memory" in text) else "error"
            message = text.strip().splitlines()[-1] if text.strip() else text
        self._end(tid, reason, message=message)

    # -- ends ------------------------------------------------------------------------------------
    def trial_dir(self, trial_id: str) -> Path:
        return self.settings.sweep_dir / TRIALS_DIR / trial_id

    def _end(self, tid: str, reason: str, *, rung: int | None = None, message: str = "",
             evidence: dict[str, Any] | None = None) -> None:
        if tid in self._ended:
            return
        last = self._last.get(tid, {})
        # GPU seconds (CPU seconds without a GPU) of every data-parallel worker of the trial.
        workers = int(self._workers.get(tid, 1))
        share = (self.settings.gpus_per_trial or self.settings.cpus_per_trial) * workers
        record = {
            "event": "end", "trial_id": tid, "stop_reason": reason,
            "rung": rung, "epochs": int(last.get("epoch") or 0),
            "best_val_iou": last.get("best_val_iou"), "last_val_iou": last.get("val_iou"),
            "gpu_seconds": share * self.seconds(tid), "message": message,
            "evidence": evidence or {},
        }
        self._ended[tid] = record
        append_event(self.path, record)
        write_ended(self.trial_dir(tid), reason)
        self._segment_start.pop(tid, None)
        self._prior_seconds[tid] = self.seconds(tid)
        self.progress.trial_ended(tid, reason, best=record["best_val_iou"], message=message)
        self.tracker.trial_end(tid, record, self.trial_dir(tid))
        self._retain()

    def _retain(self) -> None:
        """``--keep-checkpoints``: best = best.pt of the top 3 ended trials; none = nothing of
        ended trials; all = everything. Unfinished trials keep what they need to resume."""
        policy = self.settings.keep_checkpoints
        if policy == "all":
            return
        ranked = sorted((r for r in self._ended.values() if r.get("best_val_iou") is not None),
                        key=lambda r: -float(r["best_val_iou"]))
        keep = {r["trial_id"] for r in ranked[:3]} if policy == "best" else set()
        for tid in self._ended:
            folder = self.trial_dir(tid)
            (folder / "last.pt").unlink(missing_ok=True)
            if tid not in keep:
                (folder / "best.pt").unlink(missing_ok=True)

    def mark_orphans(self, restored_ids: set[str]) -> list[str]:
        """Trials an earlier driver started that Ray did not restore: end their records."""
        orphans = sorted(self._started - restored_ids - set(self._ended))
        for tid in orphans:
            append_event(self.path, {"event": "orphaned", "trial_id": tid})
            self._ended[tid] = {"trial_id": tid, "stop_reason": None}
            self.tracker.trial_orphaned(tid)
            log.warning("trial %s was started before the driver stopped but Ray did not save "
                        "it: recorded as orphaned (its folder is kept)", tid)
        return orphans

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._orphans_checked:
            self._orphans_checked = True
            self.mark_orphans({t.trial_id for t in trials})


def _progress(settings: SweepSettings) -> SweepProgress:
    """The live view (search/progress.py): the trial count, and ASHA's rungs for the pipe's
    epoch lines."""
    rungs = (rung_epochs(settings.max_epochs, settings.grace_period, settings.reduction_factor)
             if settings.scheduler == "asha" else None)
    total = len(settings.trial_params()) or settings.num_samples
    return SweepProgress(total, settings.max_epochs, rungs=rungs)


def _clean(value: Any) -> Any:
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
