"""Where runs go: the tracking URI (``--tracking-uri``, ``$MLFLOW_TRACKING_URI`` or the sqlite
store of the storage path), the artifact location of a local store, and the reachability check
a command makes before it starts anything."""


from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
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
        _check_file_store(uri, folder.expanduser().resolve(), source)
        _check_writable(folder.expanduser().resolve() / DB_FILE, source)


def _check_file_store(uri: str, folder: Path, source: str) -> None:
    """MLflow 3's file store (a folder of runs) refuses to open unless
    ``MLFLOW_ALLOW_FILE_STORE=true``: every call would fail, so say so before anything runs."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(uri)
    except MlflowException as exc:
        if "file" not in str(exc).lower():
            raise
        raise BadInput(f"{source}: {shown(uri)} is a folder for MLflow's file store, which "
                       f"this MLflow refuses to write; use sqlite:///{folder / DB_FILE} (a "
                       "database in that folder), an http:// server, or set "
                       "MLFLOW_ALLOW_FILE_STORE=true") from None


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

    with http_limits(retries=0, timeout=timeout), quiet_urllib3():
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
                why = f"failed an API call ({one_line(exc)})"
            raise BadInput(f"{source}: MLflow tracking server {shown(uri)} {why}") from None


def one_line(exc: Any, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return scrub(text if len(text) <= limit else text[:limit] + "...")


@contextlib.contextmanager
def quiet_urllib3() -> Iterator[None]:
    """urllib3 logs a warning per retried connection; the writer logs one line per outage."""
    logger = logging.getLogger("urllib3.connectionpool")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
