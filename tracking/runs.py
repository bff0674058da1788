"""One MLflow run written through a `TrackingWriter`: creation or re-attachment, params, one
metric batch per epoch (step = epoch, each step once), artifacts from the run's folder.

Every method only queues calls; each call reads the run's state when it runs, so calls queued
during an outage still go to the right run, once it exists, in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from camotune.tracking.content import (
    chunks,
    epoch_metrics,
    tag_value,
    upload,
    upload_text,
)
from camotune.tracking.repro import environment, pip_freeze, source_git_state
from camotune.tracking.writer import Lost, TrackingWriter, experiment_location
from camotune.trainer.preview import PREVIEW_FILE

log = logging.getLogger(__name__)

HISTORY_FILE = "history.csv"
# what a run folder uploads as its run's artifacts (sweep trials and `camotune train` alike)
RUN_FILES = ("config.yaml", "command.txt", HISTORY_FILE, PREVIEW_FILE)
HISTORY_EVERY = 3  # epochs between uploads of a running trial's history.csv
EPOCH_KEY = "epoch"
# MLflow's UI opens an experiment of this kind on its runs, not on the GenAI traces page.
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_TAGS = {EXPERIMENT_KIND: "custom_model_development"}
RUN_KEY_TAG = "camotune.run_key"  # a run's stable identity: created once, found by it after


def find_by_key(client, experiment_id: str, key: str) -> str | None:
    """The id of the run tagged ``RUN_KEY_TAG = key`` in the experiment, or None."""
    quoted = key.replace("\\", "\\\\").replace("'", "\\'")
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{quoted}'",
                              max_results=1)
    return runs[0].info.run_id if runs else None


def ensure_experiment(client, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (with the store's artifact location) when
    missing, restored when deleted."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=experiment_location(uri, name),
                                            tags=EXPERIMENT_TAGS)
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # created meanwhile by someone else
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        log.warning("mlflow: experiment %r was deleted; restoring it", name)
        client.restore_experiment(exp.experiment_id)
    if exp.tags.get(EXPERIMENT_KIND) is None:  # made by an older camotune: opens on traces
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND,
                                  EXPERIMENT_TAGS[EXPERIMENT_KIND])
    return exp.experiment_id


def repro_tags() -> dict[str, str]:
    """Environment tags plus the camotune source tree's git commit (when it is a checkout)."""
    tags = dict(environment())
    git = source_git_state()
    if git is not None:
        tags.update({"camotune.git_commit": git.commit, "mlflow.source.git.commit": git.commit,
                     "camotune.git_dirty": str(git.dirty).lower()})
    return tags


class RunLog:
    """One run: ``run_id`` once created or found, the metric steps known to be logged, the
    folder its files come from (``history.csv``, ``preview.png``, ...)."""

    def __init__(self, writer: TrackingWriter, folder: Path, label: str,
                 run_id: str | None = None, *, key: str | None = None,
                 experiment: str | None = None) -> None:
        self.writer = writer
        self.key = key                # camotune's run key (tag RUN_KEY_TAG): journaled calls
        self.experiment = experiment  # the experiment's name, for journaled calls
        self.folder = Path(folder)
        self.label = label
        self.run_id = run_id
        self.fresh = False            # created (or found) by this process: log its params
        self.steps: set[int] = set()  # steps confirmed logged
        self.closed = False
        self._epochs_seen = 0
        self._preview_mtime: float | None = None

    def _op(self, kind: str, **fields: Any) -> dict[str, Any] | None:
        """The journal description of a call to this run (None for a run without a key)."""
        if self.key is None:
            return None
        return {"op": kind, "run": self.key, "experiment": self.experiment, **fields}

    def id(self) -> str:
        if self.run_id is None:
            raise Lost(f"{self.label}: its run was never created")
        return self.run_id

    # -- creation -------------------------------------------------------------------------------
    def create(self, experiment: Callable[[Any], str], name: str,
               tags: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
               *, find: Callable[[Any, str], str | None] | None = None,
               on_created: Callable[[], None] | None = None,
               parent: RunLog | None = None) -> None:
        """Queue: find the run (``find(client, experiment_id)``, e.g. after a crash that lost
        the run map) or create it; then ``on_created``. Nothing when the id is known.
        ``tags`` may be a function, called when the run is created (e.g. to read the parent's
        run id, which exists only by then). A run with a key is tagged with it and looked up by
        it first. ``parent``: the run becomes its child (``mlflow.parentRunId``, read when the
        run is created: the parent may itself wait for the server)."""

        def fn(client) -> None:
            if self.run_id is not None:
                return
            eid = experiment(client)
            found = find_by_key(client, eid, self.key) if self.key is not None else None
            if found is None and find is not None:
                found = find(client, eid)
            if found is not None:  # its params may be missing: logging equal values is a no-op
                self.run_id, self.fresh = found, True
                self._reopen(client)
            else:
                values = dict(tags() if callable(tags) else tags)
                if parent is not None:
                    values["mlflow.parentRunId"] = parent.id()
                if self.key is not None:
                    values[RUN_KEY_TAG] = self.key
                run = client.create_run(eid, run_name=name,
                                        tags={k: tag_value(v) for k, v in values.items()})
                self.run_id, self.fresh = run.info.run_id, True
            if on_created is not None:
                on_created()
        op = None
        if not callable(tags):
            op = self._op("create", name=name, tags={k: tag_value(v) for k, v in tags.items()},
                          parent=parent.key if parent is not None else None)
        self.writer.call(f"{self.label}: create run", fn, op)

    def reattach(self) -> None:
        """Queue: mark a known run RUNNING again and learn which steps it already has."""
        self.closed = False
        self.writer.call(f"{self.label}: re-attach run", self._reopen, self._op("reopen"))

    def _reopen(self, client) -> None:
        run_id = self.id()
        client.update_run(run_id, status="RUNNING")
        if client.get_run(run_id).data.tags.get("camotune.interrupted") == "true":
            client.set_tag(run_id, "camotune.interrupted", "false")
        self.steps = {int(m.step) for m in client.get_metric_history(run_id, EPOCH_KEY)}

    # -- content --------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, str], *, only_fresh: bool = True) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]

        def fn(client) -> None:
            if only_fresh and not self.fresh:
                return  # a re-attached run has its params already
            for part in chunks(items):
                client.log_batch(self.id(), params=part)
        self.writer.call(f"{self.label}: params", fn,
                         self._op("params", params=dict(params), only_fresh=only_fresh))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, tag_value(v)) for k, v in tags.items()]
        if items:
            self.writer.call(f"{self.label}: tags", lambda client: [
                client.log_batch(self.id(), tags=part) for part in chunks(items)],
                self._op("tags", tags={t.key: t.value for t in items}))

    def log_metrics(self, values: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(k, float(v), stamp, step) for k, v in values.items()]
        if items:
            self.writer.call(f"{self.label}: metrics", lambda client: [
                client.log_batch(self.id(), metrics=part) for part in chunks(items, 1000)],
                self._op("metrics", metrics=[[m.key, m.value, m.timestamp, m.step]
                                             for m in items]))

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        """Queue one epoch's metrics (step = ``row["epoch"]``; empty values skipped; a step
        already logged is skipped); refresh history.csv every few epochs and preview.png
        whenever the training process rewrote it."""
        if row.get(EPOCH_KEY) is None:
            return
        stamp, row = int(time.time() * 1000), dict(row)  # replayed later after an outage
        self.writer.call(f"{self.label}: epoch {int(row[EPOCH_KEY])}",
                         lambda client: self._log_row(client, row, stamp),
                         self._op("epoch", step=int(row[EPOCH_KEY]), timestamp=stamp,
                                  metrics=epoch_metrics(row)))
        self._epochs_seen += 1
        if self._epochs_seen % HISTORY_EVERY == 0:
            self.upload(HISTORY_FILE, missing_ok=True)
        self.upload_preview()

    def fill_from_history(self) -> None:
        """Queue: log every row of history.csv whose step is not logged yet (epochs whose
        report the driver never saw, e.g. around a crash)."""
        from camotune.trainer.history import read_history

        def fn(client) -> None:
            stamp = int(time.time() * 1000)
            if not self.steps:  # a run re-attached from the run map: ask what it has
                self.steps.update(int(m.step) for m in
                                  client.get_metric_history(self.id(), EPOCH_KEY))
            for row in read_history(self.folder / HISTORY_FILE):
                if row.get(EPOCH_KEY) is not None:
                    self._log_row(client, row, stamp)
        self.writer.call(f"{self.label}: history", fn,
                         self._op("history", file=str(self.folder / HISTORY_FILE)))

    def _log_row(self, client, row: Mapping[str, Any], stamp: int) -> None:
        """Log one history row at step = its epoch, unless that step is logged already."""
        from mlflow.entities import Metric

        step = int(row[EPOCH_KEY])
        if step in self.steps:
            return
        client.log_batch(self.id(), metrics=[
            Metric(k, v, stamp, step) for k, v in epoch_metrics(row).items()])
        self.steps.add(step)

    def upload_preview(self) -> None:
        path = self.folder / PREVIEW_FILE
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return
        if mtime != self._preview_mtime:
            self._preview_mtime = mtime
            self.upload(PREVIEW_FILE, missing_ok=True)

    def upload(self, name: str | Path, artifact_path: str | None = None, *,
               missing_ok: bool = False) -> None:
        """Queue an upload of ``folder/name`` (a file or folder; text scrubbed) as it is when
        the call runs. With ``missing_ok`` nothing is queued for a missing path."""
        path = self.folder / name
        if missing_ok and not path.exists():
            return
        self.writer.call(f"{self.label}: upload {Path(name).name}",
                         lambda client: upload(client, self.id(), path, artifact_path),
                         self._op("upload", path=str(path), artifact_path=artifact_path))

    def upload_repro(self) -> None:
        """Queue ``repro/pip-freeze.txt`` and, in a modified checkout, ``repro/git-diff.patch``."""
        self._upload_text("pip-freeze.txt", pip_freeze(), "repro")
        git = source_git_state()
        if git is not None and git.dirty:
            self._upload_text("git-diff.patch", git.diff, "repro")

    def _upload_text(self, name: str, text: str, artifact_path: str | None) -> None:
        self.writer.call(f"{self.label}: {name}", lambda client: upload_text(
            client, self.id(), name, text, artifact_path),
            self._op("upload_text", name=name, text=text, artifact_path=artifact_path))

    def end(self, status: str) -> None:
        self.closed = True
        self.writer.call(f"{self.label}: end {status}",
                         lambda client: client.set_terminated(self.id(), status),
                         self._op("end", status=status))
