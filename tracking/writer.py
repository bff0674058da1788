"""`TrackingWriter`: how MLflow calls get sent, in order, through a tracking server that goes
away, without ever stalling the caller.

Every write is a call given to `TrackingWriter.call`. With ``background=True`` (a sweep's
driver) the caller only enqueues: one writer thread sends the calls in order from a bounded
queue, so a slow or dead server never blocks the Ray Tune loop. A call that fails for a
transient reason (connection refused, timeout, HTTP 5xx, a locked sqlite file) is held in
memory, and later calls queue behind it so the order holds (a run is created before anything
is logged to it); held calls are replayed every ``retry_interval_s`` and at `flush`. One warning
line is logged per outage, one when it ends.

A call made with ``op`` (a plain description of it, see `camotune.tracking.replay`) is durable
when the writer has a `Journal`: the moment it cannot be sent (or the queue is full, or the
writer is closed before it was sent) it is appended to the journal in the sweep folder, and
marked sent when a replay delivers it. Whatever is still unsent when the process ends is sent
later by ``camotune sync`` or ``camotune resume``. ``errors`` counts calls that failed at least
once; ``lost`` counts calls that can never be delivered (rejected by MLflow with HTTP 4xx, or
without ``op``/journal when the memory queue is full). Other exceptions are bugs and propagate
(in the background thread they are logged with their traceback and the call is journaled).

URIs and the reachability check live in `camotune.tracking.uris` (re-exported here).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from camotune.tracking.journal import Journal, new_key
from camotune.tracking.uris import (  # noqa: F401  (re-exported: the module's historical API)
    ARTIFACTS_DIR,
    DB_FILE,
    HTTP_DEFAULTS,
    HTTP_SCHEMES,
    artifact_root,
    check_reachable,
    default_store_uri,
    experiment_location,
    http_limits,
    one_line,
    quiet_urllib3,
    resolve_tracking_uri,
    shown,
    sqlite_path,
)

log = logging.getLogger(__name__)


class Lost(Exception):
    """A call that can never succeed: its run was never created, or its file is gone."""


Call = Callable[[Any], Any]  # receives the MlflowClient
Item = tuple[str, Call, "dict[str, Any] | None", "str | None"]  # what, fn, op, key


class _Flush:
    def __init__(self, force: bool) -> None:
        self.force = force
        self.done = threading.Event()
        self.result = False


_STOP = object()


class TrackingWriter:
    """The one MLflow client of a process for one URI (see the module docstring).

    ``call(what, fn, op=None)`` runs ``fn(client)``: now (``background=False``) or on the writer
    thread. ``what`` names the call in warning lines; ``op`` is its journal description.
    ``on_recovered`` is called after a replayed outage. ``client`` replaces the `MlflowClient`
    created on first use (tools and tests).
    """

    def __init__(self, uri: str, *, max_pending: int = 10_000, retry_interval_s: float = 30.0,
                 on_recovered: Callable[[], None] | None = None, client: Any = None,
                 journal: Journal | None = None, background: bool = False,
                 max_queue: int = 10_000) -> None:
        self.uri = uri
        self.max_pending = max_pending
        self.retry_interval_s = retry_interval_s
        self.on_recovered = on_recovered
        self.journal = journal
        self.errors = 0
        self.lost = 0
        self._pending: deque[Item] = deque()
        self._client = client
        self._outage_start: float | None = None
        self._last_try = 0.0
        self._warned_full = False
        self._permanent_warnings = 0
        self._closed = False
        self._current: Item | None = None  # the call the thread is sending now
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        # MLflow prints a "View run" link to stdout for every closed run: stdout is for
        # machine-readable output only, and the link could carry the URI's credentials.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        if uri.startswith(HTTP_SCHEMES):
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
        if background:
            self._queue = queue.Queue(maxsize=max_queue)
            self._thread = threading.Thread(target=self._loop, name="camotune-mlflow-writer",
                                            daemon=True)
            self._thread.start()

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    @property
    def pending(self) -> int:
        """Calls not sent yet (held after a failure, or waiting in the queue)."""
        return len(self._pending) + (self._queue.qsize() if self._queue is not None else 0)

    def unsent(self) -> int:
        """Calls not delivered: in the journal without a ``sent`` mark, held in memory without
        a journal entry, or lost."""
        journaled = self.journal.count_unsent() if self.journal is not None else 0
        held = sum(1 for _, _, op, key in list(self._pending)
                   if not (op is not None and self.journal is not None and self.journal.has(key)))
        return journaled + held + self.lost

    def call(self, what: str, fn: Call, op: dict[str, Any] | None = None) -> bool:
        """Send ``fn(client)`` behind any queued calls. Background: True when enqueued (False
        when the queue was full: journaled, or lost without ``op``). Otherwise True when it ran
        (or was rejected as permanent), False when it waits."""
        item: Item = (what, fn, op, new_key() if op is not None else None)
        if self._queue is not None:
            if self._closed:
                self._spill(item)
                return False
            try:
                self._queue.put_nowait(item)
                return True
            except queue.Full:
                self._spill(item)
                return False
        return self._run(item)

    def flush(self, *, force: bool = False, timeout: float | None = None) -> bool:
        """Replay held calls in order (at most once per ``retry_interval_s`` unless
        ``force``); True when nothing is left. Background: waits for the thread at most
        ``timeout`` seconds (None: until it is done)."""
        if self._queue is None:
            return self._flush(force=force)
        if self._closed:  # what was left is journaled
            return self.pending == 0
        marker = _Flush(force)
        self._queue.put(marker)
        if not marker.done.wait(timeout):
            return False
        return marker.result and self.pending == 0

    def close(self, timeout: float = 60.0) -> int:
        """Send what can be sent within ``timeout`` seconds, stop the thread, journal what is
        left; returns `unsent`."""
        if self._queue is not None and not self._closed:
            self.flush(force=True, timeout=timeout)
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join(timeout=5.0)
            # in order: the call in flight (a hung server), the held ones, the queued ones
            current = self._current
            for item in [*([current] if current is not None else []), *list(self._pending)]:
                self._spill(item)
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, tuple):
                    self._spill(item)
                elif isinstance(item, _Flush):
                    item.done.set()
        return self.unsent()

    # -- the thread --------------------------------------------------------------------------
    def _loop(self) -> None:
        poll = 1.0
        while True:
            try:
                item = self._queue.get(timeout=poll)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            try:
                if isinstance(item, _Flush):
                    item.result = self._flush(force=item.force)
                    item.done.set()
                elif item is None:
                    if self._pending:
                        self._flush()
                elif self._closed:
                    self._spill(item)
                else:
                    self._run(item)
            except Exception:  # a bug in a call: keep the thread alive, keep the call
                log.exception("mlflow: a tracking call failed unexpectedly")
                if isinstance(item, tuple):
                    self._spill(item)

    # -- sending -----------------------------------------------------------------------------
    def _run(self, item: Item) -> bool:
        if self._pending:
            self._flush()
        if self._pending:
            self._hold(item)
            return False
        if self._attempt(item) == "transient":
            self._hold(item)
            return False
        return True

    def _flush(self, *, force: bool = False) -> bool:
        if not self._pending:
            return True
        now = time.monotonic()
        if not force and now - self._last_try < self.retry_interval_s:
            return False
        self._last_try = now
        replayed = 0
        while self._pending:
            item = self._pending[0]
            if replayed == 0 and self._outage_start is not None:
                # A hung server would cost MLflow's full timeout and retries at every retry:
                # the first call after an outage gets one short try.
                with http_limits(retries=0, timeout=5):
                    outcome = self._attempt(item, retry=True)
            else:
                outcome = self._attempt(item, retry=True)
            if outcome == "transient":
                return False
            self._pending.popleft()
            replayed += 1
        if self._outage_start is not None:
            log.warning("mlflow: tracking works again after %.0f s: %d buffered calls replayed "
                        "(tracking_errors=%d lost=%d)", time.monotonic() - self._outage_start,
                        replayed, self.errors, self.lost)
            self._outage_start = None
            self._warned_full = False
            if self.on_recovered is not None:
                self.on_recovered()
        return True

    def _durable(self, item: Item) -> bool:
        return item[2] is not None and self.journal is not None

    def _spill(self, item: Item) -> None:
        """Journal a call that will not be sent by this process (lost without a journal)."""
        what, _, op, key = item
        if self._durable(item):
            self.journal.add(key, what, op)
        else:
            self.lost += 1

    def _hold(self, item: Item) -> None:
        if self._durable(item):
            self.journal.add(item[3], item[0], item[2])
        if len(self._pending) >= self.max_pending:
            if not self._durable(item):
                self.lost += 1
            if not self._warned_full:
                self._warned_full = True
                log.warning("mlflow: %d tracking calls are waiting; %s new ones until the "
                            "server is back", len(self._pending),
                            "journaling" if self.journal is not None else "dropping")
            return
        self._pending.append(item)

    def _attempt(self, item: Item, *, retry: bool = False) -> str:
        """``ok``, ``transient`` (keep it queued) or ``permanent`` (counted, not retried)."""
        what, fn, _, key = item
        self._current = item
        try:
            with quiet_urllib3():
                fn(self.client)
        except Exception as exc:  # classified below; anything unknown is re-raised
            kind = classify(exc)
            if kind is None:
                raise
            if not retry:
                self.errors += 1
            if kind == "permanent":
                if isinstance(exc, Lost) and self._durable(item):
                    # e.g. its run's creation went to the journal: `camotune sync` sends both
                    self.journal.add(key, what, item[2])
                    return "permanent"
                self.lost += 1
                self._warn_permanent(what, exc)
                return "permanent"
            if self._outage_start is None:
                self._outage_start = time.monotonic()
                self._last_try = self._outage_start
                log.warning("mlflow: %s failed (%s): tracking calls are buffered and retried "
                            "every %.0f s and at the end; trials go on", what, one_line(exc),
                            self.retry_interval_s)
            return "transient"
        finally:
            self._current = None
        if key is not None and self.journal is not None and self.journal.has(key):
            self.journal.mark_sent(key)
        return "ok"

    def _warn_permanent(self, what: str, exc: Exception) -> None:
        self._permanent_warnings += 1
        if self._permanent_warnings <= 5:
            log.warning("mlflow: %s not sent (not retried): %s", what, one_line(exc))
        elif self._permanent_warnings == 6:
            log.warning("mlflow: more calls not sent; they are counted in tracking_errors")


def classify(exc: Exception) -> str | None:
    """``transient`` (retry later), ``permanent`` (never succeeds) or None (a bug)."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, Lost):
        return "permanent"
    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
        return "permanent" if 400 <= status < 500 and status not in (408, 429) else "transient"
    if isinstance(exc, (OSError, TimeoutError)):  # requests' and urllib3's errors included
        return "transient"
    if type(exc).__module__.split(".")[0] in ("sqlalchemy", "sqlite3", "requests", "urllib3"):
        return "transient"
    return None
