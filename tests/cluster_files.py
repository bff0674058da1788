"""Readers for the container and cluster files under docker/: no Docker engine or cluster.

Compose files are read the way Compose reads them where it matters here: YAML with merge
keys and the ``!reset``/``!override`` tags, and ``${VAR}`` interpolation with the
``:-``/``-`` (default), ``:?``/``?`` (required) and ``:+``/``+`` (alternative) forms, where
``$$`` is a literal dollar.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
K8S = DOCKER / "k8s"
COMPOSE_FILES = ("compose.yaml", "compose.hosts.yaml")

# ${NAME}, ${NAME:-default}, ${NAME?error} ...; a preceding "$" escapes it ("$${NAME}").
VAR_RE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
SECRET_VARS = ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "RAY_AUTH_TOKEN")
# What `camotune sweep` accepts (the sweep command's flags as the CLI defines them).
SWEEP_FLAGS = frozenset({
    "--space", "--dataset-path", "--name", "--storage-path", "--tracking-uri", "--experiment",
    "--address", "--submit", "--num-samples", "--cpus-per-trial", "--gpus-per-trial",
    "--max-concurrent", "--workers-per-trial",
})
VALUELESS_SWEEP_FLAGS = frozenset({"--submit"})


class UnsetVariable(KeyError):
    """A ``${VAR:?msg}`` whose variable is unset or empty."""


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that accepts Compose's merge-control tags (values kept as they are)."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


for _tag in ("!reset", "!override"):
    _ComposeLoader.add_constructor(_tag, _tagged)


def load_compose(name: str) -> dict[str, Any]:
    """The raw (not interpolated) compose file ``docker/<name>``."""
    with open(DOCKER / name, encoding="utf-8") as f:
        return yaml.load(f, Loader=_ComposeLoader)  # a SafeLoader subclass


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a Compose env file (comments and blank lines skipped)."""
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value.strip()
    return env


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose interpolation of every string inside ``value``; raises `UnsetVariable`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        is_set = name in env
        usable = is_set and (env[name] != "" or not op.startswith(":"))
        if op.endswith("-"):
            return env[name] if usable else arg
        if op.endswith("?"):
            if not usable:
                raise UnsetVariable(f"{name}: {arg}")
            return env[name]
        if op.endswith("+"):
            return arg if usable else ""
        return env.get(name, "")

    return VAR_RE.sub(one, value).replace("$$", "$")


def variables(text: str) -> list[tuple[str, str, str]]:
    """Every ``(name, operator, argument)`` interpolated in ``text``."""
    return [(m.group(1), m.group(2) or "", m.group(3) or "") for m in VAR_RE.finditer(text)]


def load_manifests() -> dict[str, list[dict[str, Any]]]:
    """Every document of every ``docker/k8s/*.yaml``, by file name."""
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        with open(path, encoding="utf-8") as f:
            out[path.name] = [d for d in yaml.safe_load_all(f) if d is not None]
    return out


def sweep_flags(argv: list[str]) -> dict[str, str]:
    """Flag -> value of a ``camotune sweep ...`` argument list (``--submit`` takes none)."""
    assert argv[:2] == ["camotune", "sweep"], argv
    flags, rest = {}, argv[2:]
    while rest:
        flag = rest.pop(0)
        assert flag.startswith("--"), f"stray argument {flag!r}"
        flags[flag] = "" if flag in VALUELESS_SWEEP_FLAGS else rest.pop(0)
    return flags
