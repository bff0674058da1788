"""``Dist``: the distribution one searched ``TrainConfig`` field is sampled from.

Four types, as written in a space file under ``params``:

- ``loguniform`` ``{low, high}``: a float, uniform in log space (``0 < low < high``). Use it for
  learning rates and weight decay: a uniform LR spends almost every sample in the top decade.
- ``uniform`` ``{low, high}``: a float, uniform in ``[low, high]``.
- ``int`` ``{low, high}``: an integer, uniform in ``[low, high]``, both ends included.
- ``choice`` ``{values}``: one of a list of scalars (numbers, strings, booleans), no duplicates.

Integer ranges are always sampled on a linear scale (there is no ``log`` option); for values
spread over decades (batch sizes), list them with ``choice``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from camotune.errors import BadInput, excerpt

DIST_TYPES = ("loguniform", "uniform", "int", "choice")
_RANGE_TYPES = ("loguniform", "uniform", "int")


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps booleans apart from numbers (``True == 1`` in Python, not here)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def is_number(value: Any) -> bool:
    """A finite int or float (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def is_scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


@dataclass(frozen=True)
class Dist:
    """One searched parameter's distribution. Construction validates; bad values raise
    :class:`BadInput` with a message that names the offending key (``low``, ``values``, ...).

    ``values`` is stored as a tuple (a list given is converted). ``low``/``high`` are ``None``
    for ``choice``; ``values`` is ``None`` for the range types.
    """

    type: str
    low: float | int | None = None
    high: float | int | None = None
    values: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.type not in DIST_TYPES:
            raise BadInput(f"type: unknown distribution {excerpt(self.type)} "
                           f"(one of {', '.join(DIST_TYPES)})")
        if self.type == "choice":
            self._check_choice()
        else:
            self._check_range()

    def _check_choice(self) -> None:
        if self.low is not None or self.high is not None:
            raise BadInput("choice takes values, not low/high")
        values = self.values
        if not isinstance(values, (list, tuple)):
            raise BadInput(f"values: choice needs a list of values (got {excerpt(values)})")
        if not values:
            raise BadInput("values: choice needs at least one value (got [])")
        for v in values:
            if not is_scalar(v) or (isinstance(v, float) and not math.isfinite(v)):
                raise BadInput(f"values: {excerpt(v)} is not a number, string or boolean")
        for i, v in enumerate(values):
            if any(same_value(v, w) for w in values[:i]):
                raise BadInput(f"values: {excerpt(v)} is listed twice")
        object.__setattr__(self, "values", tuple(values))

    def _check_range(self) -> None:
        if self.values is not None:
            raise BadInput(f"{self.type} takes low and high, not values")
        for key in ("low", "high"):
            value = getattr(self, key)
            if value is None:
                raise BadInput(f"{key}: {self.type} needs low and high")
            if self.type == "int":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise BadInput(f"{key}: must be an integer for type int (got {excerpt(value)})")
            elif not is_number(value):
                raise BadInput(f"{key}: must be a finite number (got {excerpt(value)})")
        if self.low >= self.high:
            raise BadInput(f"low must be < high (got low={excerpt(self.low)}, high={excerpt(self.high)})")
        if self.type == "loguniform" and self.low <= 0:
            raise BadInput(f"low: loguniform needs low > 0 (got {excerpt(self.low)})")

    # -- queries -------------------------------------------------------------------------
    def contains(self, value: Any) -> bool:
        """Whether ``value`` can come out of this distribution (ranges: ends included; ``int``:
        an integer; ``choice``: one of the values, booleans never matching numbers)."""
        if self.type == "choice":
            return any(same_value(value, v) for v in self.values)
        if self.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            return False
        return is_number(value) and self.low <= value <= self.high

    def describe(self) -> str:
        """Short human form: ``loguniform[1e-05, 0.003]``, ``choice[2, 4, 8]``."""
        if self.type == "choice":
            return "choice[" + ", ".join(repr(v) for v in self.values) + "]"
        return f"{self.type}[{excerpt(self.low)}, {excerpt(self.high)}]"

    # -- conversion ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The space-file form: ``{type, low, high}`` or ``{type: choice, values: [...]}``."""
        if self.type == "choice":
            return {"type": "choice", "values": list(self.values)}
        return {"type": self.type, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, spec: Any) -> Dist:
        """Build from the space-file form; unknown or missing keys raise :class:`BadInput`."""
        if not isinstance(spec, Mapping):
            raise BadInput("expected a mapping such as {type: loguniform, low: 1.0e-5, "
                           f"high: 1.0e-3}} (got {excerpt(spec)})")
        unknown = sorted(set(spec) - {"type", "low", "high", "values"})
        if unknown:
            raise BadInput(f"{unknown[0]}: unknown key (a distribution has type, low, high, "
                           "values)")
        if "type" not in spec:
            raise BadInput(f"type: missing (one of {', '.join(DIST_TYPES)})")
        kind = spec["type"]
        if not isinstance(kind, str) or kind not in DIST_TYPES:
            raise BadInput(f"type: unknown distribution {excerpt(kind)} (one of {', '.join(DIST_TYPES)})")
        if kind == "choice" and "values" not in spec:
            raise BadInput("values: missing (choice needs a list of values)")
        return cls(kind, spec.get("low"), spec.get("high"), spec.get("values"))

    def to_optuna(self) -> Any:
        """The matching ``optuna.distributions`` object (optuna imported here)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.type == "choice":
            return CategoricalDistribution(list(self.values))
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(float(self.low), float(self.high),
                                 log=self.type == "loguniform")
