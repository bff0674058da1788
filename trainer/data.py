"""Finding (image, mask) pairs in the COD dataset layouts, reading them, normalising batches.

Accepted layouts of a dataset root (the first that matches wins, in this order):

* **COD10K-v3**: ``Train/Image`` + ``Train/GT_Object`` and ``Test/Image`` + ``Test/GT_Object``
  (the other ``GT_*`` folders are ignored). The test split is named ``COD10K``.
* **The common redistribution**: ``TrainDataset/{Imgs,GT}`` and ``TestDataset/<NAME>/{Imgs,GT}``
  for any subset of CAMO, CHAMELEON, COD10K, NC4K (any other ``<NAME>`` with that shape too).
* **CAMO as it ships** (``CAMO-V.1.0-CVIU2019``): ``Images/Train`` and ``Images/Test`` with one
  shared ``GT`` folder holding the masks of both splits. A mask there whose image is in neither
  split is an error; a mask of the other split is expected. The test split is named ``CAMO``.

Images and masks are matched by file stem (images ``.jpg``/``.png``/..., masks usually ``.png``).
Hidden files (``.DS_Store``, ``._x.jpg``), ``Thumbs.db`` and non-image files are ignored. When
names follow COD10K naming, only ``-CAM-`` images are kept: ``-NonCAM-`` images contain no
object (COD10K-v3 ships an all-black mask for each; with or without it they are skipped).

Checks here are the cheap ones (folders, pairing, empty splits); decoding errors (corrupt
image, mask size different from its image) are raised when the cache is built. Both raise
:class:`camotune.errors.BadInput` with one line naming the file or folder.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from camotune.errors import BadInput

log = logging.getLogger(__name__)

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (image folder, mask folder) relative to the root, per layout and split.
COD10K_TRAIN = ("Train/Image", "Train/GT_Object")
COD10K_TEST = ("Test/Image", "Test/GT_Object")
REDIST_TRAIN = ("TrainDataset/Imgs", "TrainDataset/GT")
REDIST_TEST = "TestDataset"
CAMO_TRAIN = ("Images/Train", "GT")
CAMO_TEST = ("Images/Test", "GT")


@dataclass(frozen=True)
class Sample:
    """One image and its mask; ``name`` is the image's file stem."""

    image: Path
    mask: Path
    name: str


def find_train(root: str | Path) -> list[Sample]:
    """Training pairs of whichever layout ``root`` holds, sorted by name.

    Raises BadInput for a missing root, an unknown layout, unpaired files or an empty split.
    """
    root = _root(root)
    for layout, (img, gt) in (("COD10K-v3", COD10K_TRAIN), ("TrainDataset", REDIST_TRAIN)):
        if (root / img).is_dir() or (root / gt).is_dir():
            log.info("dataset layout=%s root=%s", layout, root)
            return _pairs(root / img, root / gt)
    if (root / CAMO_TRAIN[0]).is_dir():
        log.info("dataset layout=CAMO root=%s", root)
        return _camo_pairs(root, CAMO_TRAIN[0])
    raise BadInput(
        f"{root}: no training split found (expected Train/Image + Train/GT_Object, "
        "TrainDataset/Imgs + TrainDataset/GT, or CAMO's Images/Train + GT)"
    )


def find_test_sets(root: str | Path) -> dict[str, list[Sample]]:
    """Test sets present under ``root``: name -> pairs sorted by name; {} when there are none.

    COD10K-v3's ``Test`` is "COD10K", each ``TestDataset/<NAME>`` is "<NAME>", CAMO's own
    ``Images/Test`` is "CAMO". Raises BadInput like `find_train` for a malformed test set.
    """
    root = _root(root)
    sets: dict[str, list[Sample]] = {}
    img, gt = COD10K_TEST
    if (root / img).is_dir() or (root / gt).is_dir():
        sets["COD10K"] = _pairs(root / img, root / gt)
    redist = root / REDIST_TEST
    if redist.is_dir():
        for sub in sorted(p for p in redist.iterdir() if p.is_dir() and not _hidden(p)):
            if sub.name in sets:
                log.warning("test set %s found twice; keeping the first", sub.name)
                continue
            sets[sub.name] = _pairs(sub / "Imgs", sub / "GT")
    if (root / CAMO_TEST[0]).is_dir() and "CAMO" not in sets:
        sets["CAMO"] = _camo_pairs(root, CAMO_TEST[0])
    return sets


def _root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not str(root):
        raise BadInput("--dataset-path is empty: give the dataset folder")
    if not path.is_dir():
        raise BadInput(f"dataset folder {path} does not exist")
    return path.resolve()


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _images_in(folder: Path) -> dict[str, Path]:
    """Image files of a folder by stem (stray and hidden files skipped)."""
    if not folder.is_dir():
        raise BadInput(f"missing folder {folder}")
    found: dict[str, Path] = {}
    for path in folder.iterdir():
        if _hidden(path) or path.suffix.lower() not in IMAGE_EXTS or not path.is_file():
            continue
        if path.stem in found:
            raise BadInput(f"{path}: two files named {path.stem} in {folder}")
        found[path.stem] = path
    return found


def _is_noncam(stem: str) -> bool:
    # COD10K naming: COD10K-CAM-<n>-<Super>-<m>-<Sub>-<i> vs COD10K-NonCAM-...
    return stem.startswith("COD10K-NonCAM-")


def _unpaired(files: dict[str, Path], partners: Iterable[str], what: str) -> None:
    """Raise BadInput naming the first file (by name) whose stem is not among ``partners``."""
    lonely = sorted(files.keys() - set(partners))
    if lonely:
        more = f" (and {len(lonely) - 1} more)" if len(lonely) > 1 else ""
        raise BadInput(f"{files[lonely[0]]}: {what}{more}")


def _pairs(img_dir: Path, gt_dir: Path) -> list[Sample]:
    images = {k: v for k, v in _images_in(img_dir).items() if not _is_noncam(k)}
    masks = {k: v for k, v in _images_in(gt_dir).items() if not _is_noncam(k)}
    _unpaired(images, masks.keys(), f"image has no mask in {gt_dir}")
    _unpaired(masks, images.keys(), f"mask has no image in {img_dir}")
    if not images:
        raise BadInput(f"{img_dir}: no images (empty split)")
    return [Sample(images[s], masks[s], s) for s in sorted(images)]


def _camo_pairs(root: Path, split_dir: str) -> list[Sample]:
    """CAMO keeps both splits' masks in one GT folder: pair this split's images, and reject
    only masks that belong to neither split."""
    gt_dir = root / "GT"
    images = _images_in(root / split_dir)
    masks = _images_in(gt_dir)
    every_image = set(images)
    for other in (CAMO_TRAIN[0], CAMO_TEST[0]):
        if other != split_dir and (root / other).is_dir():
            every_image |= set(_images_in(root / other))
    _unpaired(images, masks.keys(), f"image has no mask in {gt_dir}")
    _unpaired(masks, every_image, f"mask has no image in {root / 'Images'}")
    if not images:
        raise BadInput(f"{root / split_dir}: no images (empty split)")
    return [Sample(images[s], masks[s], s) for s in sorted(images)]


# -- reading ------------------------------------------------------------------------------

def _open(path: Path, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        # PIL reports truncated or corrupt data as OSError/SyntaxError/ValueError.
        raise BadInput(f"{path}: unreadable or corrupt image ({exc})") from None


def read_image(path: str | Path) -> np.ndarray:
    """RGB image as uint8 H x W x 3 (grey, palette and RGBA images are converted)."""
    return _open(Path(path), "RGB")


def read_mask(path: str | Path) -> np.ndarray:
    """Mask as uint8 H x W with values {0, 1}: grey level > 128 is the object (an object drawn
    only in the alpha channel of an otherwise blank mask is read from alpha; see
    `camotune.trainer.masks`)."""
    from PIL import Image, UnidentifiedImageError

    from camotune.trainer.masks import OBJECT_LEVEL, mask_levels

    path = Path(path)
    try:
        with Image.open(path) as im:
            return (mask_levels(im) > OBJECT_LEVEL).astype(np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise BadInput(f"{path}: unreadable or corrupt image ({exc})") from None


# -- batches on the training device ---------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std as 1 x 3 x 1 x 1 on ``device``, copied there once (a copy per
    batch would be a host sync on CUDA)."""
    return (torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1))


def normalize_batch(images: torch.Tensor) -> torch.Tensor:
    """uint8 B x H x W x 3 (as the loader yields, on any device) -> float32 B x 3 x H x W,
    ImageNet-normalised, contiguous, on the same device."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 B x H x W x 3, got {images.dtype} {tuple(images.shape)}")
    mean, std = _imagenet_stats(images.device)
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    return x.sub_(mean).div_(std).contiguous()


def masks_to_float(masks: torch.Tensor) -> torch.Tensor:
    """uint8 B x H x W masks in {0, 1} -> float32 B x 1 x H x W on the same device."""
    if masks.ndim != 3:
        raise ValueError(f"expected B x H x W masks, got {tuple(masks.shape)}")
    return masks.unsqueeze(1).float()
