"""Sending a sweep folder's journal (``tracking_pending.jsonl``) to its tracking store, from any
process: ``camotune sync SWEEP_DIR`` and the start of ``camotune resume``.

Every journaled call names its run by camotune's run key (tag ``camotune.run_key``), so a
replay is idempotent: a run is looked up by its key before it is created (a run created by an
earlier, interrupted replay or by a resumed sweep is found, not duplicated); an epoch's metrics
are skipped when the run's ``epoch`` history already has that step; other metric points are
skipped when the run's history of that key has the same (step, timestamp, value) — MLflow's
sqlite store ignores such a point itself, other stores append it, so camotune checks first;
params, tags, artifacts and run status are overwritten with equal values. Each call sent is
marked ``sent`` in the journal at once, so a replay cut short resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from camotune.tracking.content import chunks, epoch_metrics, upload, upload_text
from camotune.tracking.journal import JOURNAL_FILE, Journal
from camotune.tracking.runs import EPOCH_KEY, RUN_KEY_TAG, ensure_experiment, find_by_key
from camotune.tracking.writer import Lost, classify, one_line, quiet_urllib3, shown

log = logging.getLogger(__name__)

RUNS_FILE = "mlflow_runs.yaml"
TRIAL_MARK = "/trial/"  # a trial's run key is "<sweep key>/trial/<trial id>"


def sweep_key(name: str, created: str) -> str:
    """The run key of a sweep's parent run (its name and creation time)."""
    return f"{name}@{created or 'unknown'}"


def trial_key(sweep: str, trial_id: str) -> str:
    return f"{sweep}{TRIAL_MARK}{trial_id}"


@dataclass
class SyncResult:
    sent: int = 0       # delivered (or found already delivered)
    rejected: int = 0   # refused by the store (HTTP 4xx) or whose file is gone: not retried
    left: int = 0       # still in the journal: the store went away during the replay
    error: str = ""     # why the replay stopped early


class Replayer:
    """Sends journaled calls with one client; keeps the run map ``mlflow_runs.yaml`` of the
    sweep folder up to date with every run it finds or creates."""

    def __init__(self, client, sweep_dir: Path, uri: str) -> None:
        self.client = client
        self.dir = Path(sweep_dir)
        self.uri = uri
        self.runs: dict[str, str] = {}
        self.experiments: dict[str, str] = {}
        self._history: dict[tuple[str, str], set[tuple[int, int, float]]] = {}
        self._map = self._read_map()

    # -- the run map -------------------------------------------------------------------------
    def _read_map(self) -> dict[str, Any]:
        import yaml

        try:
            data = yaml.safe_load((self.dir / RUNS_FILE).read_text())
        except (OSError, yaml.YAMLError):
            data = None
        if not isinstance(data, dict) or data.get("tracking_uri") != shown(self.uri):
            data = {"tracking_uri": shown(self.uri), "experiment_id": None,
                    "parent_run_id": None, "trials": {}, "ended": []}
        data["trials"] = dict(data.get("trials") or {})
        return data

    def _remember(self, key: str, run_id: str, experiment_id: str) -> None:
        import yaml

        self.runs[key] = run_id
        if TRIAL_MARK in key:
            self._map["trials"][key.split(TRIAL_MARK, 1)[1]] = run_id
        else:
            self._map["parent_run_id"] = run_id
        self._map["experiment_id"] = self._map.get("experiment_id") or experiment_id
        tmp = self.dir / (RUNS_FILE + ".sync.tmp")
        tmp.write_text(yaml.safe_dump(self._map, sort_keys=False))
        os.replace(tmp, self.dir / RUNS_FILE)

    def _known(self, key: str) -> str | None:
        if key in self.runs:
            return self.runs[key]
        if TRIAL_MARK in key:
            return self._map["trials"].get(key.split(TRIAL_MARK, 1)[1])
        return self._map.get("parent_run_id")

    def _experiment(self, name: str, *, create: bool) -> str | None:
        if name not in self.experiments:
            if create:
                self.experiments[name] = ensure_experiment(self.client, name, self.uri)
            else:
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    return None
                self.experiments[name] = exp.experiment_id
        return self.experiments[name]

    def run_id(self, op: dict[str, Any]) -> str | None:
        """The run of ``op``: known (this replay, the run map), else found by its key tag."""
        key = op["run"]
        known = self._known(key)
        if known is not None:
            self.runs[key] = known
            return known
        eid = self._experiment(op["experiment"], create=False)
        found = find_by_key(self.client, eid, key) if eid is not None else None
        if found is not None:
            self._remember(key, found, eid)
        return found

    def _id(self, op: dict[str, Any]) -> str:
        run_id = self.run_id(op)
        if run_id is None:
            raise Lost(f"run {op['run']} was never created")
        return run_id

    # -- the calls ---------------------------------------------------------------------------
    def apply(self, op: dict[str, Any]) -> None:
        """Send one journaled call (idempotent, see the module docstring)."""
        from mlflow.entities import Metric, Param, RunTag

        kind, client = op["op"], self.client
        if kind == "create":
            self._create(op)
            return
        if kind == "orphan":
            run_id = self.run_id(op)
            if run_id is not None:
                client.set_tag(run_id, "camotune.orphaned", "true")
                client.set_terminated(run_id, "KILLED")
            return
        run_id = self._id(op)
        if kind == "reopen":
            client.update_run(run_id, status="RUNNING")
        elif kind == "params":
            items = [Param(k, str(v)) for k, v in op["params"].items()]
            for part in chunks(items):
                client.log_batch(run_id, params=part)
        elif kind == "tags":
            items = [RunTag(k, str(v)) for k, v in op["tags"].items()]
            for part in chunks(items):
                client.log_batch(run_id, tags=part)
        elif kind == "metrics":
            points = [Metric(k, float(v), int(ts), int(step))
                      for k, v, ts, step in op["metrics"]]
            self._log_new(run_id, points)
        elif kind == "epoch":
            if int(op["step"]) not in self._steps(run_id):
                self._log_new(run_id, [Metric(k, float(v), int(op["timestamp"]), int(op["step"]))
                                       for k, v in op["metrics"].items()])
        elif kind == "history":
            from camotune.trainer.history import read_history

            stamp, done = int(time.time() * 1000), self._steps(run_id)
            for row in read_history(op["file"]):
                if row.get(EPOCH_KEY) is not None and int(row[EPOCH_KEY]) not in done:
                    step = int(row[EPOCH_KEY])
                    self._log_new(run_id, [Metric(k, v, stamp, step)
                                           for k, v in epoch_metrics(row).items()])
        elif kind == "upload":
            upload(client, run_id, Path(op["path"]), op.get("artifact_path"))
        elif kind == "upload_text":
            upload_text(client, run_id, op["name"], op["text"], op.get("artifact_path"))
        elif kind == "end":
            client.set_terminated(run_id, op["status"])
        else:
            raise Lost(f"unknown journaled call {kind!r}")

    def _create(self, op: dict[str, Any]) -> None:
        if self.run_id(op) is not None:
            return
        eid = self._experiment(op["experiment"], create=True)
        tags = {**op.get("tags", {}), RUN_KEY_TAG: op["run"]}
        if op.get("parent"):
            tags["mlflow.parentRunId"] = self._id({**op, "run": op["parent"]})
        run = self.client.create_run(eid, run_name=op.get("name"), tags=tags)
        self._remember(op["run"], run.info.run_id, eid)

    def _points(self, run_id: str, key: str) -> set[tuple[int, int, float]]:
        if (run_id, key) not in self._history:
            self._history[run_id, key] = {
                (int(m.step), int(m.timestamp), float(m.value))
                for m in self.client.get_metric_history(run_id, key)}
        return self._history[run_id, key]

    def _steps(self, run_id: str) -> set[int]:
        return {step for step, _, _ in self._points(run_id, EPOCH_KEY)}

    def _log_new(self, run_id: str, points: list) -> None:
        new = [m for m in points if (m.step, m.timestamp, m.value)
               not in self._points(run_id, m.key)]
        for part in chunks(new, 1000):
            self.client.log_batch(run_id, metrics=part)
        for m in new:
            self._points(run_id, m.key).add((m.step, m.timestamp, m.value))


def send_journal(sweep_dir: str | os.PathLike, uri: str, *, client: Any = None,
                 progress: Callable[[int, int], None] | None = None) -> SyncResult:
    """Send the unsent calls of the sweep folder's journal, in order, until done or the store
    goes away (then ``left`` > 0 and ``error`` says why). ``progress(done, total)`` is called
    after each call."""
    sweep_dir = Path(sweep_dir)
    journal = Journal(sweep_dir / JOURNAL_FILE)
    entries = journal.unsent()
    result = SyncResult()
    if not entries:
        return result
    if client is None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
    replayer = Replayer(client, sweep_dir, uri)
    for done, entry in enumerate(entries, 1):
        try:
            with quiet_urllib3():
                replayer.apply(entry["op"])
        except Exception as exc:  # classified: transient stops the replay, bugs propagate
            kind = classify(exc)
            if kind is None:
                raise
            if kind == "transient":
                result.left = len(entries) - done + 1
                result.error = one_line(exc)
                return result
            log.warning("mlflow: %s not sent (not retried): %s", entry.get("what"),
                        one_line(exc))
            result.rejected += 1
        else:
            result.sent += 1
        journal.mark_sent(entry["key"])
        if progress is not None:
            progress(done, len(entries))
    return result
