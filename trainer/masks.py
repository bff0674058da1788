"""Reading a ground-truth mask the way the COD datasets define it: grey levels, object > 128.

A mask file is converted to 8-bit grey (``L``) from whatever PIL reads (RGB, palette, grey).
One exception, for masks exported by image editors: when the file has an alpha channel (RGBA,
LA, PA, or a palette with transparency) and its grey image is constant, the object is taken
from the alpha channel, provided alpha varies. Otherwise alpha is ignored, as in the
datasets' own tools.

This module imports only NumPy and PIL, so evaluation worker processes can use it cheaply.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

OBJECT_LEVEL = 128  # grey level > 128 is the object

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def mask_levels(im: Image.Image) -> np.ndarray:
    """uint8 H x W grey levels of a mask image (see the module docstring for the alpha rule)."""
    grey = np.asarray(im.convert("L"))
    if (im.mode in _ALPHA_MODES or "transparency" in im.info) and grey.min() == grey.max():
        alpha = np.asarray(im.convert("RGBA"))[..., 3]
        if alpha.min() != alpha.max():
            return np.ascontiguousarray(alpha)
    return grey


def mask_image(im: Image.Image) -> Image.Image:
    """`mask_levels` as an ``L`` image (for resizing with PIL)."""
    return Image.fromarray(mask_levels(im), mode="L")
