"""Decode once: a split's images and masks, resized, in memory-mapped uint8 arrays on disk.

An entry is a folder ``<cache_dir>/<key>/`` holding ``images.npy`` (N x S x S x 3, RGB),
``masks.npy`` (N x S x S, values {0, 1}) and ``meta.json``, in the order of the samples given.
The key hashes the absolute paths, sizes and modification times of every file, the side S and
the format version, so touching, replacing or renaming any file gives a new entry.

Resizing: images with PIL's bilinear filter, which averages over the source footprint when it
shrinks (area-like, no aliasing; JPEGs are first decoded at the smallest DCT scale still >= S).
Masks are read by `camotune.trainer.masks` (grey, or alpha for an otherwise blank mask with an
alpha channel), binarised at > 128 at full size, resized with the same filter and thresholded
again at half coverage, which keeps thin parts better than nearest-neighbour sampling. Masks
left empty (no object pixel) are counted in ``meta.json`` and reported with one warning each
time the split is loaded.

Writing is atomic: an entry is built in a temporary folder beside it and renamed into place,
under an ``fcntl`` lock per key, so concurrent trials on one node build it once and a reader
never sees half an entry. A crashed build leaves only a temporary folder, removed by the next
build of the same key.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from camotune.errors import BadInput
from camotune.trainer.data import Sample

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: masks with the object only in alpha read from alpha; empty count
_PROGRESS_MIN = 64  # show a progress bar from this many images on


def default_cache_dir() -> Path:
    """``$CAMOTUNE_CACHE`` if set, else ``~/.cache/camotune``."""
    env = os.environ.get("CAMOTUNE_CACHE", "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "camotune"


def cache_key(samples: Sequence[Sample], img_size: int) -> str:
    """Hex key of (absolute paths, sizes, mtimes, img_size, format version)."""
    h = hashlib.sha256(f"camotune-cache v{FORMAT_VERSION} size={img_size}\n".encode())
    for s in samples:
        for path in (s.image, s.mask):
            try:
                st = os.stat(path)
            except OSError as exc:
                raise BadInput(f"{path}: cannot read ({exc.strerror})") from None
            h.update(f"{Path(path).resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def load_split(
    samples: Sequence[Sample], img_size: int, cache_dir: str | Path | None = None
) -> tuple[np.memmap, np.memmap]:
    """Images (N x S x S x 3) and masks (N x S x S) of ``samples`` as read-only memmaps,
    S = ``img_size``, decoding them only if no cache entry exists yet.

    ``cache_dir`` None or "" means `default_cache_dir`. Raises BadInput naming the file for a
    corrupt image or a mask whose size differs from its image's, or naming the cache folder
    when it cannot be written.
    """
    if not samples:
        raise BadInput("no samples to load (empty split)")
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cache folder {root}: cannot create ({exc.strerror}); "
                       "set --cache-dir or $CAMOTUNE_CACHE") from None
    t0 = time.perf_counter()
    key = cache_key(samples, img_size)
    entry = root / key
    arrays = _open_entry(entry, len(samples), img_size)
    outcome = "hit"
    if arrays is None:
        with _locked(root / f"{key}.lock"):
            arrays = _open_entry(entry, len(samples), img_size)  # built while we waited?
            if arrays is None:
                outcome = "miss"
                _build(entry, samples, img_size)
                arrays = _open_entry(entry, len(samples), img_size)
    assert arrays is not None, f"cache entry {entry} unreadable right after it was built"
    _warn_empty(entry, samples)
    log.info("cache %s n=%d img_size=%d seconds=%.2f entry=%s", outcome, len(samples),
             img_size, time.perf_counter() - t0, entry)
    return arrays


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise BadInput(f"cache folder {path.parent}: cannot write ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, also if this process dies
        yield
    finally:
        os.close(fd)


def _open_entry(entry: Path, n: int, size: int) -> tuple[np.memmap, np.memmap] | None:
    """The entry's arrays, or None when it is absent or does not match (then it is removed by
    the rebuild, which holds the lock)."""
    if not entry.is_dir():
        return None
    try:
        meta = json.loads((entry / "meta.json").read_text())
        images = np.load(entry / "images.npy", mmap_mode="r")
        masks = np.load(entry / "masks.npy", mmap_mode="r")
    except (OSError, ValueError) as exc:
        log.warning("cache entry %s unreadable (%s); rebuilding", entry, exc)
        return None
    if (meta.get("format") != FORMAT_VERSION or images.shape != (n, size, size, 3)
            or masks.shape != (n, size, size)):
        log.warning("cache entry %s does not match (n=%d size=%d); rebuilding", entry, n, size)
        return None
    return images, masks


def _build(entry: Path, samples: Sequence[Sample], size: int) -> None:
    """Decode into a temporary folder next to ``entry``, then rename it into place. The caller
    holds the key's lock, so leftovers of crashed builds of this key can be removed."""
    for stale in entry.parent.glob(f".tmp-{entry.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if entry.exists():
        shutil.rmtree(entry)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=entry.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the entry is readable like its folder
    try:
        _decode_all(tmp, samples, size)
        masks = np.load(tmp / "masks.npy", mmap_mode="r")
        empty = [s.name for s, m in zip(samples, masks, strict=True) if not m.any()]
        meta = {"format": FORMAT_VERSION, "n": len(samples), "img_size": size,
                "names": [s.name for s in samples], "empty_masks": empty}
        del masks
        (tmp / "meta.json").write_text(json.dumps(meta))
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _warn_empty(entry: Path, samples: Sequence[Sample]) -> None:
    """One warning for a split whose masks are empty (no object pixel), with a count."""
    try:
        empty = json.loads((entry / "meta.json").read_text()).get("empty_masks", [])
    except (OSError, ValueError):
        return  # the entry was just opened; a race with a rebuild only loses the warning
    if empty:
        folder = Path(samples[0].mask).parent
        log.warning("%d of %d masks in %s are empty (no object pixel), e.g. %s: they train "
                    "and score as background; check the mask files", len(empty), len(samples),
                    folder, ", ".join(empty[:3]))


def _decode_all(folder: Path, samples: Sequence[Sample], size: int) -> None:
    from tqdm import tqdm

    n = len(samples)
    images = np.lib.format.open_memmap(folder / "images.npy", "w+", np.uint8, (n, size, size, 3))
    masks = np.lib.format.open_memmap(folder / "masks.npy", "w+", np.uint8, (n, size, size))

    def work(i: int) -> None:
        images[i], masks[i] = decode_pair(samples[i], size)

    workers = min(8, os.cpu_count() or 1, n)
    with ThreadPoolExecutor(workers) as pool, tqdm(
        total=n, desc="decoding", unit="img", file=sys.stderr, leave=False,
        disable=n < _PROGRESS_MIN,
    ) as bar:
        # PIL releases the GIL while decoding and resizing, so threads scale here.
        for _ in pool.map(work, range(n)):
            bar.update()
    images.flush()
    masks.flush()


def decode_pair(sample: Sample, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One sample resized to ``size``: (uint8 S x S x 3 RGB, uint8 S x S in {0, 1}); the mask
    read by `camotune.trainer.masks.mask_image`.

    Raises BadInput for an unreadable image or mask, or a mask of another size than its image.
    """
    from PIL import Image, UnidentifiedImageError

    from camotune.trainer.masks import mask_image

    def load(path: Path, mode: str | None, draft: bool) -> tuple[Image.Image, tuple[int, int]]:
        try:
            with Image.open(path) as im:
                full = im.size
                if draft:
                    im.draft("RGB", (size, size))  # JPEG: decode at a reduced DCT scale
                return (mask_image(im) if mode is None else im.convert(mode)), full
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            raise BadInput(f"{path}: unreadable or corrupt image ({exc})") from None

    image, image_size = load(sample.image, "RGB", draft=True)
    mask, mask_size = load(sample.mask, None, draft=False)  # None: a mask
    if mask_size != image_size:
        raise BadInput(f"{sample.mask}: mask is {mask_size[0]}x{mask_size[1]} but its image "
                       f"{sample.image.name} is {image_size[0]}x{image_size[1]}")
    rgb = np.array(image.resize((size, size), Image.BILINEAR))
    binary = Image.fromarray(((np.asarray(mask) > 128) * 255).astype(np.uint8))
    small = np.asarray(binary.resize((size, size), Image.BILINEAR))
    return rgb, (small >= 128).astype(np.uint8)
