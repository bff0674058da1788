"""``preview.png``: a few fixed validation images, their ground truth and the current prediction.

Written by the training process into its checkpoint folder every few epochs; the tracker
uploads it whenever it changed, so a collapse is seen at a glance (the prediction row goes
black). Only NumPy at module level; matplotlib (Agg, no pyplot state) inside the function.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PREVIEW_FILE = "preview.png"


def save_preview(path: str | os.PathLike, images: np.ndarray, masks: np.ndarray,
                 probs: np.ndarray, *, title: str = "", threshold: float = 0.5) -> Path:
    """Write a 3-row PNG (image / ground truth / predicted probability, one column per image)
    atomically to ``path`` and return it.

    ``images``: uint8 N x H x W x 3 (as the loaders yield them). ``masks``: N x H x W, {0, 1}
    or {0, 255} or bool. ``probs``: N x H x W sigmoid outputs in [0, 1] (shown in grey, the
    ``threshold`` contour in red). N >= 1; extra dimensions of size 1 (N x 1 x H x W) are
    squeezed. ``ValueError`` on other shapes or mismatched sizes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = np.asarray(images)
    masks = _planes(masks, "masks")
    probs = _planes(probs, "probs").astype(np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images: expected uint8 N x H x W x 3, got {images.dtype} "
                         f"{images.shape}")
    if not (images.shape[:3] == masks.shape == probs.shape) or images.shape[0] < 1:
        raise ValueError(f"images {images.shape[:3]}, masks {masks.shape} and probs "
                         f"{probs.shape} must agree (N x H x W, N >= 1)")
    masks = (masks > (127 if masks.max(initial=0) > 1 else 0)).astype(np.float32)
    n = images.shape[0]
    fig = Figure(figsize=(1.6 * n + 0.6, 5.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, n, squeeze=False)
    for j in range(n):
        axes[0, j].imshow(images[j])
        axes[1, j].imshow(masks[j], cmap="gray", vmin=0.0, vmax=1.0)
        axes[2, j].imshow(np.clip(probs[j], 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0)
        if 0.0 < threshold < 1.0 and probs[j].min() < threshold < probs[j].max():
            axes[2, j].contour(probs[j], levels=[threshold], colors="red", linewidths=0.6)
        for row in range(3):
            axes[row, j].set_xticks([])
            axes[row, j].set_yticks([])
    for row, label in enumerate(("image", "ground truth", "prediction")):
        axes[row, 0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def _planes(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 4 and 1 in (array.shape[1], array.shape[-1]):
        array = array.squeeze(1 if array.shape[1] == 1 else -1)
    if array.ndim != 3:
        raise ValueError(f"{name}: expected N x H x W, got {array.shape}")
    return array
