"""A tracking URI's scheme and secrets, settled before a sweep writes anything.

A sweep folder is plain files (``sweep.yaml``, Ray's ``tuner.pkl``) that people copy, share
and archive, so no secret is ever written into it. `take_credentials` moves the secret of an
``http(s)://user:password@host`` or ``...?token=...`` URI into MLflow's own environment
variables (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``,
``MLFLOW_TRACKING_TOKEN``), where MLflow's client reads it, and returns the URI without it;
``camotune resume`` takes them from the same variables. A database URI with a password
(``postgresql://u:pw@host/db``) cannot authenticate without it, so it is refused as a flag:
such URIs go in ``$MLFLOW_TRACKING_URI``, which is never stored.
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import parse_qsl, unquote, urlsplit

from camotune.errors import BadInput
from camotune.tracking.secrets import strip_credentials

log = logging.getLogger(__name__)

USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"
# The stores MLflow's client accepts (``postgresql+psycopg2`` and the like: a SQLAlchemy
# dialect with its driver), besides a plain local path.
SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks",
           "databricks-uc", "uc")
_TOKEN_KEYS = re.compile(r"(?i)^(?:access[_-]?)?token$|^api[_-]?key$")


def check_scheme(uri: str, source: str = "--tracking-uri") -> None:
    """BadInput unless ``uri`` is a plain path or has a scheme MLflow can store runs in
    (a mistyped ``htp://`` would otherwise drop every call of a whole sweep)."""
    if "://" not in uri:
        return
    scheme = uri.split("://", 1)[0].lower()
    if scheme.split("+", 1)[0] not in SCHEMES:
        raise BadInput(f"{source}: unknown tracking URI scheme {scheme!r}:// (one of "
                       f"{', '.join(s for s in SCHEMES if s != 'uc')}, or a local path)")


def take_credentials(uri: str, source: str = "--tracking-uri") -> tuple[str, str | None]:
    """``(uri without its secret, kind)``: ``kind`` is ``"basic"`` (user:password moved to
    ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``), ``"token"`` (a token query parameter moved
    to ``MLFLOW_TRACKING_TOKEN``) or None (nothing secret). A database URI with a password
    is BadInput (see the module docstring)."""
    if not uri or "://" not in uri:
        return uri, None
    parts = urlsplit(uri)
    stripped = strip_credentials(uri)
    if stripped == uri:
        return uri, None
    if parts.scheme.lower() not in ("http", "https"):
        raise BadInput(f"{source}: a password in a {parts.scheme}:// URI would be stored in the "
                       "sweep folder: give the URI in $MLFLOW_TRACKING_URI instead (never "
                       "stored)")
    kind = None
    if parts.username is not None:
        os.environ[USERNAME_ENV] = unquote(parts.username)
        os.environ[PASSWORD_ENV] = unquote(parts.password or "")
        kind = "basic"
    for key, value in parse_qsl(parts.query):
        if _TOKEN_KEYS.match(key):
            os.environ[TOKEN_ENV] = value
            kind = kind or "token"
    return stripped, kind or "basic"


def warn_if_missing(kind: str | None, uri: str) -> None:
    """On resume: one warning line when the sweep's URI had a secret that the environment
    no longer holds (the server may refuse the calls)."""
    if kind == "basic" and not os.environ.get(PASSWORD_ENV):
        log.warning("%s had a password, which is never stored: set %s and %s (the server "
                    "may refuse the calls)", uri, USERNAME_ENV, PASSWORD_ENV)
    elif kind == "token" and not os.environ.get(TOKEN_ENV):
        log.warning("%s had a token, which is never stored: set %s (the server may refuse "
                    "the calls)", uri, TOKEN_ENV)
