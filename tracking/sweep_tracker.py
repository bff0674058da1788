"""MLflow tracking: a parent run per sweep, a child run per trial, one run per ``camotune train``.

In a sweep the driver is the only writer: `SweepTracker` receives the records callback's events
(search/sweep_callback.py) and turns them into runs; trials only write files in their folders. The
trial-id -> run-id map is kept in ``<sweep>/mlflow_runs.json``, so a resumed sweep re-attaches
to its runs instead of creating new ones.

The tracker is pickled with Ray's Tuner (``tuner.pkl``) and unpickled by ``Tuner.restore``: it
pickles as its settings alone (no client, no URI, so no credentials). Its live state (client,
run map, buffered calls) is one `SweepSession` per sweep folder and process, shared by every
tracker object of that sweep (the one the driver creates and the one unpickled with the
callback) and rebuilt from the run map in a new process.

Tracking URI: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///<storage-path>/mlflow.db`` with artifacts in ``<storage-path>/mlartifacts/``.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from camotune.tracking.sweep_runs import SweepSession
from camotune.tracking.tracker import Tracker
from camotune.tracking.writer import (
    HTTP_SCHEMES,
    artifact_root,
    check_reachable,
    resolve_tracking_uri,
    shown,
)

__all__ = ["SweepTracker", "mlflow_ui_command"]


def mlflow_ui_command(settings) -> str:
    """How to browse a sweep's runs: the exact ``mlflow ui --backend-store-uri ...
    --default-artifact-root ...`` line for a local store, ``open <url>`` for a server.
    Credentials are never printed."""
    uri = resolve_tracking_uri(settings.tracking_uri, settings.storage_path)
    if uri.startswith(HTTP_SCHEMES):
        return f"open {shown(uri)}"
    command = ["mlflow", "ui", "--backend-store-uri", shown(uri)]
    root = artifact_root(uri)
    if root is not None:
        command += ["--default-artifact-root", str(root)]
    return shlex.join(command)


_SESSIONS: dict[str, SweepSession] = {}


class SweepTracker(Tracker):
    """The MLflow side of one sweep (see the module docstring). Picklable; every method is
    safe to call while the tracking server is down (calls are buffered and replayed)."""

    def __init__(self, settings, tracking_uri: str | None = None) -> None:
        self.settings = settings
        self._uri = tracking_uri

    @classmethod
    def for_settings(cls, settings, *, timeout: float = 5.0) -> SweepTracker:
        """A tracker for ``settings`` after checking the store can take runs: an unreachable
        server or an unwritable sqlite folder raises :class:`BadInput` (one line, within
        about 2 x ``timeout`` seconds). Needs no sweep folder yet."""
        uri = resolve_tracking_uri(settings.tracking_uri, settings.storage_path)
        if settings.tracking_uri:
            source = "--tracking-uri"
        elif os.environ.get("MLFLOW_TRACKING_URI"):
            source = "$MLFLOW_TRACKING_URI"
        else:
            source = "--storage-path"
        check_reachable(uri, timeout=timeout, source=source)
        return cls(settings, uri)

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.settings = state["settings"]
        self._uri = None

    @property
    def tracking_uri(self) -> str:
        if self._uri is None:
            self._uri = resolve_tracking_uri(self.settings.tracking_uri,
                                             self.settings.storage_path)
        return self._uri

    @property
    def session(self) -> SweepSession:
        key = str(self.settings.sweep_dir.resolve())
        if key not in _SESSIONS:
            _SESSIONS[key] = SweepSession(self.settings, self.tracking_uri)
        return _SESSIONS[key]

    def close(self) -> None:
        """Send what is buffered and forget this sweep's session: the next call starts from
        the run map, as a new driver process would."""
        session = _SESSIONS.pop(str(self.settings.sweep_dir.resolve()), None)
        if session is not None:
            session.writer.close()

    def unsent(self) -> int:
        """Tracking calls of this sweep not sent (after `sweep_end`: in the journal
        ``tracking_pending.jsonl``, for ``camotune sync``, or rejected)."""
        return self.session.writer.unsent()

    def run_ids(self) -> dict[str, str]:
        """trial id -> run id of the trials whose runs exist."""
        return {tid: r.run_id for tid, r in self.session.trials.items() if r.run_id}

    # -- Tracker ----------------------------------------------------------------------------------
    def sweep_start(self, settings) -> None:
        self.session.start(settings)

    def trial_start(self, trial_id: str, record: dict[str, Any]) -> None:
        self.session.trial_start(trial_id, record)

    def trial_epoch(self, trial_id: str, metrics: dict[str, Any]) -> None:
        self.session.trial_epoch(trial_id, metrics)

    def trial_end(self, trial_id: str, record: dict[str, Any], trial_dir: Path) -> None:
        self.session.trial_end(trial_id, record, Path(trial_dir))

    def trial_orphaned(self, trial_id: str) -> None:
        self.session.trial_orphaned(trial_id)

    def sweep_end(self, sweep_dir: Path) -> None:
        self.session.end(Path(sweep_dir))

    def sweep_abort(self, status: str) -> None:
        """Close what is still open after the sweep stopped short of `sweep_end` (an error:
        ``FAILED``; Ctrl-C: ``KILLED``): open trial runs KILLED, the parent run ``status``;
        then send what can be sent. Nothing when this process never started the sweep's
        session."""
        session = _SESSIONS.get(str(self.settings.sweep_dir.resolve()))
        if session is None:
            return
        for run in session.trials.values():
            if run.run_id and not run.closed:
                run.end("KILLED")
        if not session.parent.closed and (session.parent.run_id or session.writer.pending):
            session.parent.end(status)
        session.writer.flush(force=True)
