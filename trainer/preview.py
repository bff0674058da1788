"""``preview.png``: a few fixed validation images, their ground truth and the current prediction.

Written by the training process into its checkpoint folder after every epoch (a trial stopped by
ASHA or the collapse stopper ends after any epoch, so its last picture is of its last epoch);
the tracker uploads it whenever it changed, so a collapse is seen at a glance (the prediction
row goes black). The title names the run (the checkpoint folder's name: the trial id in a
sweep), the epoch, the val IoU and which weights (raw or EMA) are shown. Drawn with Pillow,
a few milliseconds per picture; only NumPy at module level.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

PREVIEW_FILE = "preview.png"
TILE = 160  # px per image in the picture
LABEL_W, GAP = 96, 4


def preview_title(run: str, epoch: int, iou: float | None, weights: str) -> str:
    """``"<run>  epoch <n>  val IoU <x.xxx> (<weights> weights)"``."""
    score = "-" if iou is None else f"{iou:.3f}"
    return f"{run}  epoch {epoch}  val IoU {score} ({weights} weights)"


def save_preview(path: str | os.PathLike, images: np.ndarray, masks: np.ndarray,
                 probs: np.ndarray, *, title: str = "", threshold: float = 0.5) -> Path:
    """Write a 3-row PNG (image / ground truth / predicted probability, one column per image)
    atomically to ``path`` and return it.

    ``images``: uint8 N x H x W x 3 (as the loaders yield them). ``masks``: N x H x W, {0, 1}
    or {0, 255} or bool. ``probs``: N x H x W sigmoid outputs in [0, 1] (shown in grey, the
    ``threshold`` boundary in red). N >= 1; extra dimensions of size 1 (N x 1 x H x W) are
    squeezed. ``ValueError`` on other shapes or mismatched sizes.
    """
    from PIL import Image, ImageDraw

    images = np.asarray(images)
    masks = _planes(masks, "masks")
    probs = _planes(probs, "probs").astype(np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images: expected uint8 N x H x W x 3, got {images.dtype} "
                         f"{images.shape}")
    if not (images.shape[:3] == masks.shape == probs.shape) or images.shape[0] < 1:
        raise ValueError(f"images {images.shape[:3]}, masks {masks.shape} and probs "
                         f"{probs.shape} must agree (N x H x W, N >= 1)")
    masks = masks > (127 if masks.max(initial=0) > 1 else 0)
    n = images.shape[0]
    font = _font(13)
    lines = textwrap.wrap(title, width=max(30, (LABEL_W + n * (TILE + GAP)) // 8)) if title \
        else []
    top = 10 + 18 * len(lines)
    canvas = Image.new("RGB", (LABEL_W + n * (TILE + GAP), top + 3 * (TILE + GAP)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((6, 4 + 18 * i), line, fill="black", font=font)
    for row, label in enumerate(("image", "ground truth", "prediction")):
        draw.text((6, top + row * (TILE + GAP) + TILE // 2 - 8), label, fill="black", font=font)
    for j in range(n):
        x = LABEL_W + j * (TILE + GAP)
        tiles = (Image.fromarray(images[j]).resize((TILE, TILE), Image.BILINEAR),
                 Image.fromarray(masks[j].astype(np.uint8) * 255).resize((TILE, TILE),
                                                                          Image.NEAREST),
                 _prediction_tile(probs[j], threshold))
        for row, tile in enumerate(tiles):
            canvas.paste(tile.convert("RGB"), (x, top + row * (TILE + GAP)))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    canvas.save(tmp, format="PNG", compress_level=1)
    os.replace(tmp, path)
    return path


def _prediction_tile(prob: np.ndarray, threshold: float):
    """The probability in grey with the ``threshold`` boundary in red."""
    from PIL import Image

    grey = Image.fromarray((np.clip(prob, 0.0, 1.0) * 255).astype(np.uint8))
    grey = np.asarray(grey.resize((TILE, TILE), Image.BILINEAR))
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if 0.0 < threshold < 1.0:
        inside = grey > threshold * 255
        edge = np.zeros_like(inside)
        edge[1:, :] |= inside[1:, :] != inside[:-1, :]
        edge[:, 1:] |= inside[:, 1:] != inside[:, :-1]
        rgb[edge] = (230, 20, 20)
    return Image.fromarray(rgb)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow >= 10.1)
    except TypeError:
        return ImageFont.load_default()


def _planes(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 4 and 1 in (array.shape[1], array.shape[-1]):
        array = array.squeeze(1 if array.shape[1] == 1 else -1)
    if array.ndim != 3:
        raise ValueError(f"{name}: expected N x H x W, got {array.shape}")
    return array


def write_preview(model: Any, data: Any, device: Any, out_dir: Path, *, epoch: int,
                  iou: float | None, weights: str, n: int = 4) -> Path:
    """``preview.png`` in ``out_dir``: the first ``n`` validation images of ``data`` (a
    `DataModule`), their masks and the prediction of ``model`` (the ``weights`` that scored
    ``iou`` this epoch: ``"raw"`` or ``"ema"``). Touches no random number generator."""
    import torch

    from camotune.trainer.data import normalize_batch

    images, masks = next(iter(data.val_loader(n)))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(normalize_batch(images.to(device))).logits.float()
    model.train(was_training)
    probs = torch.sigmoid(logits)[:, 0].cpu().numpy()
    title = preview_title(Path(out_dir).name, epoch, iou, weights)
    return save_preview(Path(out_dir) / PREVIEW_FILE, images.numpy(), masks.numpy(), probs,
                        title=title)
