"""Reading space and points files: the bounded, strict YAML reader of
:mod:`camotune.yamlfile` (``1e-4`` is a float; duplicate or unhashable keys, alias bombs and
deep nesting are one-line BadInput errors naming the file)."""

from __future__ import annotations

from camotune.yamlfile import parse_yaml, read_yaml

__all__ = ["parse_yaml", "read_yaml"]
