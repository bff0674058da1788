"""Reading space and points files: YAML with two fixes over ``yaml.safe_load``.

- ``1e-4`` is a float. YAML 1.1 (PyYAML) reads it as the *string* "1e-4" because it lacks a
  dot; learning rates are written that way, so space files accept both spellings.
- A key given twice in one mapping is an error (PyYAML silently keeps the last).

Failures raise :class:`BadInput` with one line naming the file.
"""

from __future__ import annotations

import re
from typing import Any

from camotune.errors import BadInput

_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)

_LOADER: Any = None


def _loader() -> Any:
    global _LOADER
    if _LOADER is None:
        import yaml

        class SpaceLoader(yaml.SafeLoader):
            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                seen = set()
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=deep)
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r}", key_node.start_mark)
                    seen.add(key)
                return super().construct_mapping(node, deep=deep)

        SpaceLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT,
                                          list("-+0123456789."))
        _LOADER = SpaceLoader
    return _LOADER


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; a syntax error or duplicate key raises BadInput naming ``source``."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None)
        if mark is not None and problem:
            detail = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
        else:
            detail = " ".join(str(exc).split())
        raise BadInput(f"{source}: not valid YAML ({detail})") from None


def read_yaml(path: str) -> Any:
    """Read and parse a YAML file; unreadable files raise BadInput naming the path."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not a text file (UTF-8 expected)") from None
    return parse_yaml(text, path)
