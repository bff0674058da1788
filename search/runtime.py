"""Starting or joining Ray for a sweep's driver, with Ray's token authentication.

Clusters started with ``ray start`` (Ray >= 2.59) require a shared token. Ray reads it from
``$RAY_AUTH_TOKEN``, else the file ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``, but
sends it only when ``RAY_AUTH_MODE=token``; Ray turns that mode on by itself only for a local
cluster found with ``auto``. So before joining any other address, camotune sets
``RAY_AUTH_MODE=token`` when a token is available and the variable is unset (an explicit
``RAY_AUTH_MODE=disabled`` is respected).

A missing or rejected token is one line (``BadInput``, exit 2) naming what to set. Ray itself
would retry for 20 s and then raise a bare ``ConnectionError`` (or, with ``RAY_AUTH_MODE=token``
and no token, abort the process), so a ``host:port`` address is probed first: a TCP connect,
then one GCS call whose authentication error comes back at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from camotune.errors import BadInput

log = logging.getLogger(__name__)

MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
PROBE_TIMEOUT_S = 5.0
WHAT_TO_SET = (f"set {TOKEN_ENV} to the cluster's token (or write it to ~/.ray/auth_token, "
               f"or name a file holding it in {TOKEN_PATH_ENV})")


def token_source() -> str | None:
    """Where Ray will take the token from, in Ray's order: ``$RAY_AUTH_TOKEN``, the file
    ``$RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``; None when there is no token.
    A ``RAY_AUTH_TOKEN_PATH`` naming a missing or empty file is ``BadInput``."""
    if os.environ.get(TOKEN_ENV, "").strip():
        return f"${TOKEN_ENV}"
    named = os.environ.get(TOKEN_PATH_ENV, "")
    if named:
        if not _has_text(Path(named).expanduser()):
            raise BadInput(f"{TOKEN_PATH_ENV}={named}: no token in that file")
        return named
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if _has_text(default) else None


def _has_text(path: Path) -> bool:
    try:
        return bool(path.read_text().strip())
    except OSError:
        return False


def configure_auth(address: str, *, label: str = "") -> str | None:
    """Prepare token authentication before joining ``address``; returns the token's source
    (None without a token). Sets ``RAY_AUTH_MODE=token`` when a token exists and the
    variable is unset. ``RAY_AUTH_MODE=token`` without any token is ``BadInput``; ``label``
    names the address in messages (default ``--address ADDRESS``)."""
    label = label or f"--address {address}"
    source = token_source()
    mode = os.environ.get(MODE_ENV, "").strip().lower()
    if mode == "token" and source is None:
        raise BadInput(f"{label}: {MODE_ENV}=token but no token found: {WHAT_TO_SET}")
    if not mode and source is not None:
        os.environ[MODE_ENV] = "token"
        _refresh_ray_config()
        log.debug("token authentication on (token from %s)", source)
    return source


def _refresh_ray_config() -> None:
    """Ray caches its settings (the auth mode among them) on first use; read them again, as
    Ray does when it turns token mode on itself. A no-op if Ray has not read them yet."""
    from camotune.search import compat

    compat.refresh_auth_config()


def auth_error_message(address: str, source: str | None, *, label: str = "") -> str:
    """The one line for a cluster that refused us: no token sent, or the wrong one."""
    label = label or f"--address {address}"
    if source is None or os.environ.get(MODE_ENV, "").strip().lower() not in ("", "token"):
        return f"{label}: the Ray cluster requires a token: {WHAT_TO_SET}"
    return (f"{label}: the Ray cluster rejected the token from {source}: "
            f"set the token the cluster was started with ({TOKEN_ENV}, {TOKEN_PATH_ENV} or "
            "~/.ray/auth_token)")


def is_gcs_address(address: str) -> bool:
    """``host:port`` (a GCS address), not ``auto``, ``ray://...`` or ``http://...``."""
    return "://" not in address and address != "auto" and ":" in address


def probe_gcs(address: str, source: str | None, *, label: str = "") -> None:
    """Fail fast, in one line, when nothing answers at ``address`` or the GCS there refuses
    our token. Uses Ray's GCS client (internal API); skipped if it is not importable."""
    from ray.exceptions import AuthenticationError

    label = label or f"--address {address}"
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except (OSError, ValueError):
        raise BadInput(f"{label}: no Ray cluster answers there (the head's "
                       "`ray start --head --port` address, default port 6379)") from None
    from camotune.search import compat

    try:
        with _quiet_stderr():
            compat.connect_gcs(address)
    except AuthenticationError:
        raise BadInput(auth_error_message(address, source, label=label)) from None


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Hide what Ray's C++ core writes to file descriptor 2 (its retry warnings) meanwhile."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def init_ray(address: str | None) -> None:
    """Join ``address`` (auto, host:port, ray://host:10001), else ``$RAY_ADDRESS`` (set inside
    a Ray job), else start a local Ray. Does nothing when Ray is already initialised (e.g. by
    a test or an enclosing Ray job). An unreachable cluster or a missing or rejected token
    is ``BadInput`` (one line)."""
    import ray
    from ray.exceptions import AuthenticationError

    if ray.is_initialized():
        return
    from camotune.search.quiet import worker_env_vars

    address_flag = bool(address)
    label = f"--address {address}" if address else f"RAY_ADDRESS={os.environ.get('RAY_ADDRESS')}"
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    if not address:
        from camotune.search import compat

        # A local Ray listens on 127.0.0.1 only, with no dashboard and no metrics endpoint.
        with compat.loopback_node():
            ray.init(include_dashboard=False, _system_config=compat.LOCAL_SYSTEM_CONFIG,
                     **quiet)
    else:
        if address.startswith(("http://", "https://")):
            raise BadInput(f"{label} is a job API address: use it with --submit, "
                           "or give the cluster's GCS address (host:6379)")
        source = configure_auth(address, label=label)
        if is_gcs_address(address):
            probe_gcs(address, source, label=label)
        try:
            # a cluster's workers do not inherit this environment: the quiet settings go in
            # the job's runtime_env (inside a submitted job, the submission carries them)
            env = worker_env_vars() if address_flag else {}
            ray.init(address=address, **quiet,
                     **({"runtime_env": {"env_vars": env}} if env else {}))
        except AuthenticationError:
            raise BadInput(auth_error_message(address, source, label=label)) from None
        except ConnectionError as exc:
            raise BadInput(f"{label}: {_first_line(exc)}") from None
        except ValueError as exc:
            if not address.startswith("ray://"):
                raise
            # Ray says so when the Ray client is missing: pip install 'ray[client]'.
            raise BadInput(f"{label}: {_first_line(exc)}") from None
    log.info("ray: %s", {k: v for k, v in ray.cluster_resources().items()
                         if k in ("CPU", "GPU", "memory")})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
