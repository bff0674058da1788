"""Keeping secrets out of MLflow: every param, tag and text artifact passes through `scrub`.

Three kinds of secret are removed: credentials in URIs (``scheme://user:password@host`` ->
``scheme://host``), ``key=value`` / ``key: value`` pairs whose key names a secret (password,
token, secret, api key, ...), and the value of any environment variable whose name names a
secret (``RAY_AUTH_TOKEN``, ``MLFLOW_TRACKING_PASSWORD``, ``AWS_SECRET_ACCESS_KEY``, ...),
wherever it appears. Environment variables themselves are never logged.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# Environment variables whose values are secrets (matched on the upper-cased name).
_SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|ACCESS_?KEY|"
                         r"PRIVATE_?KEY|_PAT$|_AUTH$|^AUTH")
# Values too short or too common to be a secret: masking them would mangle ordinary text.
_MIN_SECRET_LEN = 4
_NOT_SECRETS = frozenset({"true", "false", "none", "null", "yes", "no", "token", "basic"})

_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")
_ASSIGNMENT = re.compile(
    r"(?i)\b([\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|"
    r"private[_-]?key|auth)[\w.-]*)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&'\"]+)")
_TOKEN_SHAPES = re.compile(r"\b(?:ghp_|gho_|ghs_|github_pat_|hf_|sk-|xox[abp]-|glpat-)"
                           r"[A-Za-z0-9_-]{16,}|\bAKIA[0-9A-Z]{16}\b")


def secret_env_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of the environment variables whose names look secret, longest first."""
    environ = _environ_snapshot() if environ is None else environ
    values = {v for k, v in environ.items()
              if _SECRET_ENV.search(k.upper()) and len(v) >= _MIN_SECRET_LEN
              and v.lower() not in _NOT_SECRETS}
    return sorted(values, key=len, reverse=True)


def _environ_snapshot() -> dict[str, str]:
    """A copy of the environment; other threads (MLflow's telemetry) may change it while we
    read, which makes iterating ``os.environ`` raise."""
    for _ in range(10):
        try:
            return dict(os.environ)
        except (KeyError, RuntimeError):
            continue
    return {}


def scrub(text: str, environ: dict[str, str] | None = None) -> str:
    """``text`` with URI credentials, ``password=...``-style values, well-known token shapes
    and secret environment values replaced by ``***``. Idempotent; non-secret text is kept."""
    for value in secret_env_values(environ):
        if value in text:
            text = text.replace(value, MASK)
    text = _USERINFO.sub(r"\1", text)
    text = _ASSIGNMENT.sub(_mask_assignment, text)
    return _TOKEN_SHAPES.sub(MASK, text)


def _mask_assignment(match: re.Match) -> str:
    """``key: value`` with the value masked, unless the value is an empty or placeholder word
    (``null``, ``none``, ``basic``...) that no secret is: ``tracking_auth: null`` stays."""
    value = match.group(3).strip("\"'")
    if not value or value.lower() in _NOT_SECRETS or value == MASK:
        return match.group(0)
    return match.group(1) + match.group(2) + MASK


def strip_credentials(uri: str) -> str:
    """``uri`` without ``user:password@`` and without query parameters that carry secrets;
    anything that is not a URI is returned unchanged."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if not parts.scheme or not parts.netloc:
        return uri
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(q for q in parts.query.split("&") if q and not _ASSIGNMENT.search(q))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
