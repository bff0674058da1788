"""Trial tables simulated from planted models, for the `camotune why` analysis tests.

Factors are coded -1 (good level) / +1 (bad level); a model maps a cell (dict factor -> code)
to its true mean response. Each trial adds a seed-block offset and independent noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import product

import numpy as np
import pandas as pd

from camotune.spaces.design import Design


def full_cells(factors: Sequence[str]) -> list[dict[str, int]]:
    return [dict(zip(factors, p, strict=True)) for p in product((-1, 1), repeat=len(factors))]


def fraction_cells(factors: Sequence[str], fraction: int) -> list[dict[str, int]]:
    return Design({f: ("good", "bad") for f in factors}, fraction).coded()


def simulate(model: Callable[[dict[str, int]], float], cells: Sequence[dict[str, int]],
             seeds: Sequence[int], rng: np.random.Generator, *, noise: float = 0.02,
             block_sd: float = 0.03, response: str = "y") -> pd.DataFrame:
    """One row per cell x seed: the coded factors, ``seed`` and ``response``."""
    offsets = {s: rng.normal(0.0, block_sd) for s in seeds}
    rows = []
    for seed in seeds:
        for cell in cells:
            value = model(cell) + offsets[seed] + rng.normal(0.0, noise)
            rows.append({**cell, "seed": seed, response: value})
    return pd.DataFrame(rows)


def needs_both(cell: dict[str, int]) -> float:
    """IoU-like: the run works only with A and B both at their good levels (neither single
    revert helps, the pair does); C costs a little at its bad level; D does nothing.
    Coded: 0.1 + 0.1 (1 - A)(1 - B) - 0.005 C, so good = 0.505, bad = 0.095."""
    return 0.1 + 0.1 * (1 - cell["A"]) * (1 - cell["B"]) - 0.005 * cell["C"]


# the planted coded coefficients of `needs_both` (effects are twice these)
NEEDS_BOTH_COEF = {"A": -0.1, "B": -0.1, "C": -0.005, "D": 0.0, "A:B": 0.1, "A:C": 0.0,
                   "A:D": 0.0, "B:C": 0.0, "B:D": 0.0, "C:D": 0.0}
