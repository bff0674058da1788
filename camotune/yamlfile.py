"""Reading YAML that users write (space, points and config files, ``sweep.yaml``): safe and
bounded.

On top of ``yaml.safe_load``:

- ``1e-4`` is a float. YAML 1.1 (PyYAML) reads it as the *string* "1e-4" because it lacks a
  dot; learning rates are written that way, so both spellings are accepted.
- A key given twice in one mapping is an error (PyYAML silently keeps the last), and so is an
  unhashable key (``? [a, b] : 1``).
- Hostile files fail fast: nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_NODES`
  nodes once aliases are expanded (a "billion laughs" bomb), a recursive alias, or a file
  larger than :data:`MAX_BYTES` is refused before anything is built from it.

Every failure raises :class:`BadInput` with one line naming the file; values quoted in
messages go through :func:`camotune.errors.excerpt`, so they stay short.
"""

from __future__ import annotations

import os
import re
from typing import Any

from camotune.errors import BadInput, excerpt

MAX_DEPTH = 50  # nested collections; a space file needs about 4
MAX_NODES = 10_000  # scalars + collections after alias expansion
MAX_BYTES = 4 * 1024 * 1024

_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)

_LOADERS: dict[bool, Any] = {}


class _TooBig(Exception):
    """Raised inside the loader; turned into BadInput by `parse_yaml`."""


def _loader(plain_floats: bool) -> Any:
    if plain_floats not in _LOADERS:
        _LOADERS[plain_floats] = _make_loader(plain_floats)
    return _LOADERS[plain_floats]


def _make_loader(plain_floats: bool) -> Any:
    import yaml
    from yaml.nodes import MappingNode, SequenceNode

    class BoundedLoader(yaml.SafeLoader):
        """SafeLoader with bounded depth and expanded size, and strict keys."""

        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH:
                    mark = self.peek_event().start_mark
                    raise _TooBig(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def compose_document(self) -> Any:
            node = super().compose_document()
            _check_size(node, MappingNode, SequenceNode)
            return node

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        None, None, "a key must be a plain value, not a list or mapping",
                        key_node.start_mark) from None
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {excerpt(key)}", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    if plain_floats:
        BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT,
                                            list("-+0123456789."))
    return BoundedLoader


def _check_size(root: Any, mapping: type, sequence: type) -> None:
    """Count the nodes of ``root`` with aliases expanded (each shared node counted per use,
    memoised so the walk is linear in the file); raise _TooBig past MAX_NODES or on a cycle."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _TooBig("an alias refers to a node that contains it (recursive alias)")
        total = 1
        if isinstance(node, (mapping, sequence)):
            active.add(key)
            children = (c for pair in node.value for c in pair) if isinstance(node, mapping) \
                else iter(node.value)
            for child in children:
                total += size(child)
                if total > MAX_NODES:
                    raise _TooBig(f"more than {MAX_NODES} values once aliases are expanded")
            active.discard(key)
        sizes[key] = total
        return total

    if root is not None:
        size(root)  # depth is bounded by compose_node, so this recursion is too


def parse_yaml(text: str, source: str, *, plain_floats: bool = True) -> Any:
    """Parse YAML text; a syntax error, duplicate or unhashable key, or a file past the
    bounds raises BadInput naming ``source``. With ``plain_floats=False``, ``1e-4`` stays a
    string as in ``yaml.safe_load`` (for files written by ``yaml.safe_dump``, which leaves such
    strings unquoted)."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader(plain_floats))  # a SafeLoader subclass: safe
    except _TooBig as exc:
        raise BadInput(f"{source}: refused: {exc}") from None
    except RecursionError:
        raise BadInput(f"{source}: refused: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None)
        if mark is not None and problem:
            detail = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
        else:
            detail = " ".join(str(exc).split())
        raise BadInput(f"{source}: not valid YAML ({detail[:200]})") from None


def read_yaml(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES,
              plain_floats: bool = True) -> Any:
    """Read and parse a YAML file (UTF-8, at most ``max_bytes``; ``plain_floats`` as in
    `parse_yaml`); unreadable, binary or oversized files raise BadInput naming the path."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise BadInput(f"{path}: larger than {max_bytes} bytes; not a camotune YAML file")
    if b"\x00" in raw:
        raise BadInput(f"{path}: not a text file (binary data)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not a text file (UTF-8 expected)") from None
    return parse_yaml(text, str(path), plain_floats=plain_floats)
