"""Where runs go and how they get there: the tracking URI, the reachability check at start, and
`TrackingWriter`, which survives a tracking server that goes away.

A sweep's driver must never die or stall for minutes because MLflow is down. Every write is a
call given to `TrackingWriter.call`; one that fails for a transient reason (connection refused,
timeout, HTTP 5xx, a locked sqlite file) is kept in a bounded in-memory queue, and later calls
queue behind it so the order holds (a run is created before anything is logged to it). The
queue is replayed at the next call after ``retry_interval_s`` and at the end (`flush(force=
True)`). One warning line is logged per outage, one when it ends; ``errors`` counts the calls
that failed at least once and ``lost`` those never delivered. A call MLflow rejects (HTTP 4xx)
is counted and not retried. Other exceptions are bugs and propagate.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from camotune.errors import BadInput
from camotune.tracking.secrets import scrub, strip_credentials

log = logging.getLogger(__name__)

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
HTTP_SCHEMES = ("http://", "https://")
# MLflow's own defaults (7 retries with exponential backoff, 120 s timeout) stall a caller for
# minutes per call when the server is gone; the writer buffers instead. A user's own values win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


# -- the tracking URI -------------------------------------------------------------------------

def default_store_uri(storage_path: str | os.PathLike) -> str:
    """``sqlite:///<storage-path>/mlflow.db`` (absolute)."""
    return f"sqlite:///{Path(storage_path).expanduser().resolve() / DB_FILE}"


def resolve_tracking_uri(tracking_uri: str | None, storage_path: str | os.PathLike) -> str:
    """``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else `default_store_uri`."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
        default_store_uri(storage_path)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other URIs and in-memory sqlite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path).expanduser().resolve() if path else None


def artifact_root(uri: str) -> Path | None:
    """Where a sqlite store keeps artifacts: ``mlartifacts/`` beside the database. None for
    other stores (a server chooses its own artifact root; MLflow's client would otherwise
    pick ``./mlruns`` in the working directory)."""
    db = sqlite_path(uri)
    return db.parent / ARTIFACTS_DIR if db is not None else None


def experiment_location(uri: str, experiment: str) -> str | None:
    """The artifact location to create ``experiment`` with: ``<artifact_root>/<experiment>``
    as a file URI for sqlite stores, None (the server's default) otherwise."""
    root = artifact_root(uri)
    if root is None:
        return None
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment) or "experiment"
    return (root / slug).as_uri()


def shown(uri: str) -> str:
    """The URI as it may be printed or logged: no credentials."""
    return scrub(strip_credentials(uri))


# -- the check at start ------------------------------------------------------------------------

@contextlib.contextmanager
def http_limits(*, retries: int, timeout: float) -> Iterator[None]:
    """Force MLflow's HTTP retry count and timeout for the calls inside the block."""
    keys = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({keys[0]: str(retries), keys[1]: str(max(1, round(timeout))),
                       keys[2]: "0"})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_reachable(uri: str, *, timeout: float = 5.0, source: str = "--tracking-uri") -> None:
    """Raise :class:`BadInput` (one line naming ``source``) unless ``uri`` can take runs.

    http(s): one MLflow API call, without retries, answers within ``timeout`` seconds (so a
    wrong host, a wrong path, a hung server or rejected credentials are all caught, with
    MLflow's own TLS and auth settings). sqlite and local paths: the database's folder (or
    its nearest existing parent) is writable. Other stores (databases, Databricks) are not
    checked.
    """
    if uri.startswith(HTTP_SCHEMES):
        _check_http(uri, timeout, source)
        return
    db = sqlite_path(uri)
    if db is not None:
        _check_writable(db, source)
    elif uri.startswith("file:") or "://" not in uri:
        folder = Path(uri[len("file://"):] if uri.startswith("file://") else uri)
        _check_writable(folder.expanduser().resolve() / DB_FILE, source)


def _check_writable(file: Path, source: str) -> None:
    folder = file.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    writable = folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
    if file.exists():
        writable = writable and os.access(file, os.W_OK)
    if not writable:
        raise BadInput(f"{source}: the MLflow store {file} is not writable")


def _check_connect(uri: str, timeout: float, source: str) -> None:
    """A plain TCP connect first: a refused or unresolvable server fails at once, without
    importing MLflow. Skipped behind an HTTP proxy (only MLflow's own call can tell then)."""
    import socket
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    host = parts.hostname
    if not host or (urllib.request.getproxies() and not urllib.request.proxy_bypass(host)):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((host, port), timeout=timeout).close()
    except ValueError as exc:  # a port that is not a number
        raise BadInput(f"{source}: {shown(uri)} is not a valid URI ({exc})") from None
    except OSError as exc:
        reason = str(exc) if isinstance(exc, socket.gaierror) or not exc.strerror else \
            f"[Errno {exc.errno}] {exc.strerror}"
        raise BadInput(f"{source}: MLflow tracking server {shown(uri)} is not reachable "
                       f"({reason or 'timed out'})") from None


# The cause MLflow's message buries: "[Errno 111] Connection refused", "Read timed out", ...
_CAUSE = re.compile(r"\[Errno -?\d+\] [^'\")\]]+|Read timed out|timed out|"
                    r"certificate verify failed|Connection (?:refused|reset|aborted)|"
                    r"RemoteDisconnected")


def _check_http(uri: str, timeout: float, source: str) -> None:
    _check_connect(uri, timeout, source)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with http_limits(retries=0, timeout=timeout), _quiet_urllib3():
        try:
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except MlflowException as exc:
            status = exc.get_http_status_code()
            cause = _CAUSE.search(str(exc))
            if status in (401, 403):
                why = "rejected the credentials"
            elif status == 404:
                why = "answered 404: not an MLflow tracking server at this path"
            elif cause is not None:
                why = f"is not reachable ({cause.group(0).strip()})"
            else:
                why = f"failed an API call ({_one_line(exc)})"
            raise BadInput(f"{source}: MLflow tracking server {shown(uri)} {why}") from None


def _one_line(exc: Any, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return scrub(text if len(text) <= limit else text[:limit] + "...")


# -- the buffered writer ------------------------------------------------------------------------

class Lost(Exception):
    """A call that can never succeed: its run was never created, or its file is gone."""


Call = Callable[[Any], Any]  # receives the MlflowClient


class TrackingWriter:
    """The one MLflow client of a process for one URI, buffering calls during an outage.

    ``call(what, fn)`` runs ``fn(client)`` now, or queues it (at most ``max_pending`` calls;
    beyond that new calls are dropped and counted as lost). ``what`` names the call in the
    warning lines. ``on_recovered`` is called after a replayed outage. ``client`` replaces the
    `MlflowClient` created on first use (tools and tests).
    """

    def __init__(self, uri: str, *, max_pending: int = 10_000, retry_interval_s: float = 30.0,
                 on_recovered: Callable[[], None] | None = None, client: Any = None) -> None:
        self.uri = uri
        self.max_pending = max_pending
        self.retry_interval_s = retry_interval_s
        self.on_recovered = on_recovered
        self.errors = 0
        self.lost = 0
        self._pending: deque[tuple[str, Call]] = deque()
        self._client = client
        self._outage_start: float | None = None
        self._last_try = 0.0
        self._warned_full = False
        self._permanent_warnings = 0
        # MLflow prints a "View run" link to stdout for every closed run: stdout is for
        # machine-readable output only, and the link could carry the URI's credentials.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        if uri.startswith(HTTP_SCHEMES):
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    @property
    def pending(self) -> int:
        return len(self._pending)

    def call(self, what: str, fn: Call) -> bool:
        """Run ``fn(client)`` behind any queued calls; True when it ran (or was rejected as
        permanent), False when it waits in the queue."""
        if self._pending:
            self.flush()
        if self._pending:
            self._queue(what, fn)
            return False
        if self._attempt(what, fn) == "transient":
            self._queue(what, fn)
            return False
        return True

    def flush(self, *, force: bool = False) -> bool:
        """Replay queued calls in order (at most once per ``retry_interval_s`` unless
        ``force``); True when none is left."""
        if not self._pending:
            return True
        now = time.monotonic()
        if not force and now - self._last_try < self.retry_interval_s:
            return False
        self._last_try = now
        replayed = 0
        while self._pending:
            what, fn = self._pending[0]
            if replayed == 0 and self._outage_start is not None:
                # A hung server would cost MLflow's full timeout and retries at every retry:
                # the first call after an outage gets one short try.
                with http_limits(retries=0, timeout=5):
                    outcome = self._attempt(what, fn, retry=True)
            else:
                outcome = self._attempt(what, fn, retry=True)
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

    # -- internals ---------------------------------------------------------------------------
    def _queue(self, what: str, fn: Call) -> None:
        if len(self._pending) >= self.max_pending:
            self.lost += 1
            if not self._warned_full:
                self._warned_full = True
                log.warning("mlflow: %d tracking calls are waiting; dropping new ones until the "
                            "server is back", len(self._pending))
            return
        self._pending.append((what, fn))

    def _attempt(self, what: str, fn: Call, *, retry: bool = False) -> str:
        """``ok``, ``transient`` (keep it queued) or ``permanent`` (counted, not retried)."""
        try:
            with _quiet_urllib3():
                fn(self.client)
        except Exception as exc:  # classified below; anything unknown is re-raised
            kind = _classify(exc)
            if kind is None:
                raise
            if not retry:
                self.errors += 1
            if kind == "permanent":
                self.lost += 1
                self._warn_permanent(what, exc)
                return "permanent"
            if self._outage_start is None:
                self._outage_start = time.monotonic()
                self._last_try = self._outage_start
                log.warning("mlflow: %s failed (%s): tracking calls are buffered and retried "
                            "every %.0f s and at the end; trials go on", what, _one_line(exc),
                            self.retry_interval_s)
            return "transient"
        return "ok"

    def _warn_permanent(self, what: str, exc: Exception) -> None:
        self._permanent_warnings += 1
        if self._permanent_warnings <= 5:
            log.warning("mlflow: %s not sent (not retried): %s", what, _one_line(exc))
        elif self._permanent_warnings == 6:
            log.warning("mlflow: more calls not sent; they are counted in tracking_errors")


@contextlib.contextmanager
def _quiet_urllib3() -> Iterator[None]:
    """urllib3 logs a warning per retried connection; the writer logs one line per outage."""
    logger = logging.getLogger("urllib3.connectionpool")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _classify(exc: Exception) -> str | None:
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
