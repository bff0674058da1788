"""Search spaces: YAML files (``spaces/*.yaml`` presets or any path) turned into validated
`Space` objects that the sweep engine samples (Optuna distributions) or enumerates (factorial
designs). See ``camotune.spaces.space`` for the file format.

Importing this package costs no heavy imports: PyYAML, Optuna and timm are imported inside the
functions that need them.
"""

from .design import Design
from .dist import Dist
from .space import Space, list_presets, load_points, load_space
from .sweep_options import CollapseSettings, SweepOptions

__all__ = ["CollapseSettings", "Design", "Dist", "Space", "SweepOptions", "list_presets",
           "load_points", "load_space"]
