"""The live MLflow state of one sweep in the driver process: the parent run, one child run per
trial, and the run map ``<sweep>/mlflow_runs.yaml`` that lets a resumed sweep re-attach.

Run map (YAML): ``tracking_uri`` (no credentials), ``experiment_id``, ``parent_run_id``,
``trials`` (trial id -> run id), ``ended`` (trials whose runs were closed for good). It is not
a ``.json`` file on purpose: on ``Tuner.restore`` Ray copies every ``*.json`` and ``*.pkl`` of
the experiment folder into its staging folder and later uploads them back, which would put
the map of the interrupted driver over the resumed driver's. A trial
interrupted by the time budget or Ctrl-C is closed KILLED with ``camotune.interrupted=true``
but not "ended": its run is re-opened when the resumed sweep restarts it.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from camotune.sweepdir import SWEEP_FILE, TRIALS_DIR, TRIALS_FILE, read_events
from camotune.tracking.content import (
    STATUS,
    config_params,
    run_name,
    sweep_params,
    sweep_summary,
)
from camotune.tracking.journal import JOURNAL_FILE, Journal
from camotune.tracking.replay import RUNS_FILE, send_journal, sweep_key, trial_key
from camotune.tracking.repro import dataset_fingerprint, read_environment
from camotune.tracking.runs import (
    RUN_FILES,
    RunLog,
    ensure_experiment,
    find_by_key,
    repro_tags,
)
from camotune.tracking.writer import TrackingWriter, classify, http_limits, one_line, shown

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 20.0  # the longest a sweep's end waits for the tracking server
SWEEP_ARTIFACTS = ("leaderboard.csv", "best_config.yaml", "best_command.txt", "plots")



def read_run_map(sweep_dir: Path, uri: str) -> dict[str, Any] | None:
    """The sweep's trial-id -> run-id map (``RUNS_FILE``) when it was written for tracking
    ``uri``; None when it is missing, unreadable or belongs to another store."""
    import yaml

    try:
        data = yaml.safe_load((sweep_dir / RUNS_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("tracking_uri") != shown(uri):
        log.warning("mlflow: this sweep's runs were logged to %s, now logging to %s: new "
                    "runs are created there", data.get("tracking_uri"), shown(uri))
        return None
    return data

class SweepSession:
    """Parent and child runs of one sweep; every method only queues writer calls."""

    def __init__(self, settings, uri: str) -> None:
        self.settings = settings
        self.uri = uri
        self.dir = settings.sweep_dir
        self.journal = Journal(self.dir / JOURNAL_FILE)
        known = read_run_map(self.dir, uri) or {}
        self.key = known.get("run_key") or sweep_key(settings.name, settings.created)
        self.send_journal()  # what an earlier driver could not send goes first
        self.writer = TrackingWriter(uri, on_recovered=self._tag_errors, journal=self.journal,
                                     background=True)
        self.experiment_id: str | None = None
        self.parent = self._run_log(self.dir, f"sweep {settings.name}", self.key)
        self.trials: dict[str, RunLog] = {}
        self.ended: set[str] = set()
        self._closed_here: set[str] = set()  # ended or orphaned by this driver
        self._map_lock = threading.Lock()
        self.unsent = 0
        self.from_map = self._load_map()

    def _run_log(self, folder: Path, label: str, key: str, run_id: str | None = None) -> RunLog:
        return RunLog(self.writer, folder, label, run_id, key=key,
                      experiment=self.settings.experiment)

    def send_journal(self) -> None:
        """Send the journal of an earlier driver (one short try when the server is down: then
        it stays for `camotune sync` and this driver's calls are journaled after it)."""
        if not self.journal.unsent():
            return
        try:
            with http_limits(retries=0, timeout=5):
                result = send_journal(self.dir, self.uri)
        except Exception as exc:  # classified: a transient error leaves the journal as it is
            if classify(exc) is None:
                raise
            log.warning("mlflow: the calls of %s could not be sent (%s)", JOURNAL_FILE,
                        one_line(exc))
            return
        log.info("mlflow: %d journaled tracking calls sent (%d rejected, %d left)",
                 result.sent, result.rejected, result.left)

    # -- the run map ------------------------------------------------------------------------------
    @property
    def map_path(self) -> Path:
        return self.dir / RUNS_FILE

    def _load_map(self) -> bool:
        data = read_run_map(self.dir, self.uri)
        if data is None:
            return False
        self.experiment_id = data.get("experiment_id")
        self.parent.run_id = data.get("parent_run_id")
        for tid, run_id in (data.get("trials") or {}).items():
            self.trials[tid] = self._run_log(self.dir / TRIALS_DIR / tid, f"trial {tid}",
                                             trial_key(self.key, tid), run_id)
        self.ended = set(data.get("ended") or [])
        return True

    def save_map(self) -> None:
        import yaml

        with self._map_lock:  # the writer thread saves it too (when a run is created)
            data = {"tracking_uri": shown(self.uri), "run_key": self.key,
                    "experiment_id": self.experiment_id,
                    "parent_run_id": self.parent.run_id,
                    "trials": {t: r.run_id for t, r in dict(self.trials).items() if r.run_id},
                    "ended": sorted(set(self.ended))}
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.map_path.with_suffix(".yaml.tmp")
            tmp.write_text(yaml.safe_dump(data, sort_keys=False))
            os.replace(tmp, self.map_path)

    def _experiment(self, client) -> str:
        if self.experiment_id is None:
            self.experiment_id = ensure_experiment(client, self.settings.experiment, self.uri)
        return self.experiment_id

    @staticmethod
    def _find(**tags: str | Callable[[], str]):
        """A finder of the run with these tags (a value may be a function, called when the
        search runs): after a crash between creating a run and saving the map, the run is
        found instead of duplicated."""
        def find(client, eid: str) -> str | None:
            terms = []
            for key, value in tags.items():
                text = value() if callable(value) else value
                quoted = text.replace("\\", "\\\\").replace("'", "\\'")
                terms.append(f"tags.`{key}` = '{quoted}'")
            runs = client.search_runs([eid], filter_string=" and ".join(terms), max_results=1)
            return runs[0].info.run_id if runs else None
        return find

    # -- the sweep ---------------------------------------------------------------------------------
    def start(self, settings) -> None:
        """Create the parent run (params, sweep.yaml, pip freeze, git diff) or re-open it."""
        self.settings = settings
        if self.parent.run_id is not None:
            self.parent.reattach()
            log.info("mlflow: sweep %s continues in run %s (%s)", settings.name,
                     self.parent.run_id, shown(self.uri))
            return
        base = settings.base
        tags = {**repro_tags(), "camotune.kind": "sweep", "camotune.sweep_name": settings.name,
                "camotune.sweep_dir": str(self.dir), "camotune.space": settings.space.name,
                "camotune.dataset_path": base.dataset_path,
                "camotune.dataset_hash": dataset_fingerprint(base.dataset_path)}
        resumed = (self.dir / TRIALS_FILE).exists()
        find = self._find(**{"camotune.sweep_dir": str(self.dir),
                             "camotune.sweep_name": settings.name})
        self.parent.create(self._experiment, settings.name, tags, on_created=self.save_map,
                           find=find if resumed else None)
        self.parent.log_params(sweep_params(settings))
        self.parent.upload(SWEEP_FILE, missing_ok=True)
        self.parent.upload_repro()
        log.info("mlflow: sweep %s is run %s in experiment %s (%s)", settings.name,
                 self.parent.run_id or "(pending)", settings.experiment, shown(self.uri))

    def end(self, sweep_dir: Path) -> None:
        """Upload the sweep's results, log its summary, close what is open, send everything."""
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        self.writer.flush(force=True, timeout=FLUSH_TIMEOUT_S / 2)  # the run ids, where it can
        events = read_events(sweep_dir / TRIALS_FILE)
        done = {e["trial_id"] for e in events if e.get("event") in ("end", "orphaned")}
        for event in events:
            # An end recorded by an earlier driver: that driver may have been killed with the
            # calls closing the run still queued (the run map's "ended" is saved when they
            # are queued), so they are sent again; every one of them is idempotent.
            tid = event.get("trial_id")
            if tid in self._closed_here or tid not in self.trials:
                continue
            if event.get("event") == "end":
                self.trial_end(tid, event, self.trials[tid].folder)
            elif event.get("event") == "orphaned":
                self.trial_orphaned(tid)
        interrupted = [t for t, r in self.trials.items()
                       if t not in done and t not in self.ended and not r.closed]
        for tid in interrupted:  # time budget or Ctrl-C: they continue on resume
            self.trials[tid].set_tags({"camotune.interrupted": "true"})
            self.trials[tid].end("KILLED")
        metrics, tags = sweep_summary(events)
        best = self.trials.get(tags.get("camotune.best_trial_id", ""))
        if best is not None and best.run_id:
            tags["camotune.best_run_id"] = best.run_id
        self.parent.folder = sweep_dir
        for name in SWEEP_ARTIFACTS:
            self.parent.upload(name, missing_ok=True)
        self.parent.log_metrics(metrics)
        tags["camotune.interrupted"] = str(bool(interrupted)).lower()
        self.parent.set_tags(tags)
        self.parent.end("KILLED" if interrupted else "FINISHED")
        while not self.writer.flush(force=True, timeout=max(1.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:  # a short outage at the very end is waited out
                break
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        self._tag_errors()
        unsent = self.writer.close(timeout=max(5.0, deadline - time.monotonic()))
        created = sum(1 for r in dict(self.trials).values() if r.run_id)
        log.info("mlflow: sweep %s logged to %s: parent run %s, %d trial runs, "
                 "tracking_errors=%d unsent=%d", self.settings.name, shown(self.uri),
                 self.parent.run_id or "(not created yet)", created, self.writer.errors, unsent)
        journaled = self.journal.count_unsent()
        if journaled:
            log.warning("mlflow: %d tracking calls are not sent yet; they are kept in %s; send "
                        "them with: camotune sync %s", journaled, self.dir / JOURNAL_FILE,
                        shlex.quote(str(self.dir)))
        if self.writer.lost:
            log.warning("mlflow: %d tracking calls were rejected by the server (not retried)",
                        self.writer.lost)
        self.unsent = unsent

    def _tag_errors(self) -> None:
        if self.writer.errors:
            self.parent.set_tags({"camotune.tracking_errors": self.writer.errors})

    # -- trials ------------------------------------------------------------------------------------
    def trial(self, tid: str, record: dict[str, Any] | None = None) -> RunLog:
        """The trial's run, created when first seen (from ``record``, else its config.yaml)."""
        run = self.trials.get(tid)
        if run is not None and (run.run_id is not None or record is None):
            return run
        if run is None:
            folder = self.dir / (record["trial_dir"] if record else f"{TRIALS_DIR}/{tid}")
            run = self.trials[tid] = self._run_log(folder, f"trial {tid}",
                                                   trial_key(self.key, tid))
        record = record or _record_from_folder(run.folder)
        tags = {**repro_tags(), "camotune.trial_id": tid, "camotune.kind": "trial",
                "camotune.sweep_name": self.settings.name}
        # The parent's id exists only once the parent run does (perhaps after an outage).
        run.create(self._experiment, run_name(record.get("params") or {}, fallback=tid),
                   tags, parent=self.parent, on_created=self.save_map,
                   find=self._find(**{"camotune.trial_id": tid,
                                      "mlflow.parentRunId": self.parent.id})
                   if self.from_map or record.get("restored") else None)
        run.log_params(config_params(record.get("config") or {}, record.get("lr_stage1"),
                                     record.get("lr_stage2")))
        if record.get("params"):
            run.set_tags({"camotune.searched": ",".join(sorted(record["params"]))})
        return run

    def trial_start(self, tid: str, record: dict[str, Any]) -> None:
        if tid in self.ended:
            log.warning("mlflow: trial %s was restarted after it ended; its run stays closed",
                        tid)
            return
        run = self.trials.get(tid)
        if run is not None and run.run_id is not None:
            run.reattach()
            run.set_tags({"camotune.restored": "true"})
        else:
            self.trial(tid, record)

    def trial_epoch(self, tid: str, metrics: dict[str, Any]) -> None:
        if tid not in self.ended:
            self.trial(tid).log_epoch(metrics)

    def trial_end(self, tid: str, record: dict[str, Any], trial_dir: Path) -> None:
        """Stop reason, rung, message, the trial's files, status by outcome; closes the run."""
        run = self.trial(tid)
        run.folder = trial_dir
        run.fill_from_history()
        reason = record.get("stop_reason") or "error"
        tags: dict[str, Any] = {"camotune.stop_reason": reason,
                                "camotune.epochs": record.get("epochs")}
        if record.get("rung") is not None:
            tags["camotune.rung"] = record["rung"]
        if record.get("message"):
            tags["camotune.message"] = record["message"]
        if record.get("evidence"):
            tags["camotune.evidence"] = json.dumps(record["evidence"], default=str)
        tags.update(read_environment(trial_dir) or {"camotune.environment_of": "driver"})
        tags["mlflow.note.content"] = trial_note(tid, record)  # the run's description
        run.set_tags(tags)
        run.log_params({"stop_reason": reason}, only_fresh=False)
        if record.get("gpu_seconds") is not None:
            run.log_metrics({"compute_seconds": float(record["gpu_seconds"])})
        for name in RUN_FILES:
            run.upload(name, missing_ok=True)
        if self.settings.log_checkpoints:
            run.upload("best.pt", "checkpoints", missing_ok=True)
        run.end(STATUS.get(reason, "FAILED"))
        self.ended.add(tid)
        self._closed_here.add(tid)
        self.save_map()

    def trial_orphaned(self, tid: str) -> None:
        """Close the run of a trial Ray will not restore: KILLED, ``camotune.orphaned=true``."""
        self.ended.add(tid)
        self._closed_here.add(tid)
        run = self.trials.get(tid)
        if run is not None:
            run.set_tags({"camotune.orphaned": "true"})
            run.end("KILLED")
        elif self.from_map:  # its run may exist, created just before the crash
            find = self._find(**{"camotune.trial_id": tid, "mlflow.parentRunId": self.parent.id})

            key = trial_key(self.key, tid)

            def close(client) -> None:
                run_id = find_by_key(client, self._experiment(client), key) or \
                    find(client, self._experiment(client))
                if run_id is not None:
                    self.trials[tid] = self._run_log(self.dir / TRIALS_DIR / tid,
                                                     f"trial {tid}", key, run_id)
                    client.set_tag(run_id, "camotune.orphaned", "true")
                    client.set_terminated(run_id, "KILLED")
            self.writer.call(f"trial {tid}: close orphan", close,
                             {"op": "orphan", "run": key, "experiment": self.settings.experiment})
        self.save_map()


def _record_from_folder(folder: Path) -> dict[str, Any]:
    from camotune.errors import BadInput
    from camotune.trainer.config import load_yaml, to_dict

    try:
        cfg = load_yaml(str(folder / "config.yaml"))
    except BadInput:  # missing or unreadable: the run just has no params
        return {}
    return {"config": to_dict(cfg), "lr_stage1": cfg.resolved_lr(1),
            "lr_stage2": cfg.resolved_lr(2)}


def trial_note(tid: str, record: dict[str, Any]) -> str:
    """One line for the run's description: how the trial ended and its best IoU. A trial ASHA
    or the collapse stopper stopped is KILLED in MLflow (stopped before its last epoch, by
    design); this line and the ``stop_reason`` param say why."""
    reason = record.get("stop_reason") or "error"
    why = {"completed": "completed", "asha_stopped": "stopped early by ASHA",
           "collapsed": "stopped by the collapse stopper", "diverged": "diverged",
           "oom": "out of memory", "error": "failed"}.get(reason, reason)
    parts = [f"trial {tid}: {why}"]
    if record.get("rung") is not None:
        parts.append(f"at rung {record['rung']}")
    if record.get("epochs") is not None:
        parts.append(f"after {record['epochs']} epochs")
    if record.get("best_val_iou") is not None:
        parts.append(f"best val_iou {float(record['best_val_iou']):.4f}")
    if record.get("message"):
        parts.append(f"({' '.join(str(record['message']).split())[:200]})")
    return " ".join(parts)
