"""Synthetic camouflage scenes in the COD10K-v3 layout (``camotune synth``).

Each scene is a background texture with one irregular object cut from a texture of the same
family: both are band-limited noise (random-phase, power-law spectrum) coloured through a
3-colour palette. The object's palette, spectral slope and scale are shifted from the
background's by an amount that shrinks as ``difficulty`` grows: at 0 the object stands out in
colour and grain, at 1 only the texture's discontinuity at its outline gives it away.

Output (``size`` x ``size`` px, JPEG quality 95 without chroma subsampling, masks 0/255 PNG)::

    OUT/Train/Image/COD10K-CAM-1-Aquatic-6-Fish-1.jpg     OUT/Train/GT_Object/....png
    OUT/Train/Image/COD10K-NonCAM-2-Terrestrial-...jpg   (all-black mask, as COD10K-v3 ships)
    OUT/Test/...                                          (only when n_test > 0)

Every image depends only on (seed, split, index), so the same arguments give the same bytes
and a larger ``n_train`` keeps the first images. NonCAM scenes are background only.

The default difficulty, 0.4, keeps the task learnable but not trivial. On 150 scenes at 64 px
(objects ~11% of the image, anywhere, sometimes cut by the border): all-background IoU 0, a
fixed centred disc of the mean object area 0.12, an Otsu threshold on the main colour axis
0.31, and even the best threshold along the true object/background colour axis, chosen per
image with the mask known, 0.79 (0.90 at difficulty 0, 0.13 at 1). A randomly initialised
edgenext_xx_small with a small decoder, 100 training images, batch 8, passes 0.3 validation
IoU after 6-8 CPU epochs and reaches ~0.4-0.5 by epoch 12.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from camotune.errors import BadInput

log = logging.getLogger(__name__)

DEFAULT_DIFFICULTY = 0.4  # learnable, not trivial: see the module docstring
COLOUR_GAP = 0.9  # RGB distance (0..1 units) between palettes at difficulty 0
TEXTURE_GAP = 0.8  # spectral-slope difference at difficulty 0
SHADOW = 0.3  # darkening of the outline's rim at difficulty 0
GRAIN = 0.08  # per-pixel noise (std, 0..1 units): hurts pixel thresholds more than a CNN
# (super-class number, super-class, sub-class number, sub-class): a few of COD10K's own.
CLASSES = (
    (1, "Aquatic", 1, "BatFish"), (1, "Aquatic", 6, "Fish"), (1, "Aquatic", 7, "Flounder"),
    (1, "Aquatic", 15, "SeaHorse"), (2, "Terrestrial", 26, "Chameleon"),
    (2, "Terrestrial", 36, "Leopard"), (2, "Terrestrial", 44, "Snake"),
    (3, "Flying", 54, "Butterfly"), (3, "Flying", 62, "Owl"), (4, "Amphibian", 67, "Frog"),
    (4, "Amphibian", 68, "Toad"), (5, "Other", 69, "Other"),
)
_SPLITS = {"Train": 0, "Test": 1}


def _noise(rng: np.random.Generator, size: int, slope: float, scale: float) -> np.ndarray:
    """Band-limited noise in [0, 1] (size x size): power ~ f^-slope, fading above f ~ 1/scale."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amp = f ** (-slope / 2) * np.exp(-((f * scale) ** 2))
    amp[0, 0] = 0.0
    spectrum = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) * amp
    field = np.fft.irfft2(spectrum, s=(size, size))
    field = (field - field.mean()) / (field.std() + 1e-8)
    return 1.0 / (1.0 + np.exp(-1.6 * field))


def _palette(rng: np.random.Generator) -> np.ndarray:
    """3 x RGB in [0, 1]: a natural base colour (foliage, sand, rock, water) and two neighbours."""
    base = np.array([(0.35, 0.45, 0.2), (0.6, 0.5, 0.35), (0.45, 0.43, 0.4), (0.25, 0.4, 0.45),
                     (0.5, 0.35, 0.25)])[rng.integers(5)]
    base = np.clip(base + rng.normal(0, 0.06, 3), 0.05, 0.95)
    levels = np.array([0.65, 1.0, 1.3])[:, None]  # dark, mid, light
    return np.clip(base * levels + rng.normal(0, rng.uniform(0.03, 0.08), (3, 3)), 0.0, 1.0)


def _colourise(t: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Map t in [0, 1] (H x W) through the palette's piecewise-linear ramp -> H x W x 3."""
    x = t * (len(palette) - 1)
    i = np.minimum(x.astype(np.int64), len(palette) - 2)
    w = (x - i)[..., None]
    return palette[i] * (1 - w) + palette[i + 1] * w


def _blob(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(soft mask, rim) of a smooth irregular shape at a random place, H x W in [0, 1]."""
    radius = rng.uniform(0.12, 0.28) * size
    cy, cx = rng.uniform(0.7 * radius, size - 0.7 * radius, 2)  # may touch the border
    angle, stretch = rng.uniform(0, np.pi), rng.uniform(0.6, 1.0)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / stretch
    theta, r = np.arctan2(v, u), np.hypot(u, v)
    k = np.arange(2, 6)[:, None, None]
    wobble = (rng.uniform(0.04, 0.16, 4)[:, None, None] / (k - 1)
              * np.cos(k * theta + rng.uniform(0, 2 * np.pi, 4)[:, None, None])).sum(0)
    edge = radius * (1.0 + wobble)
    alpha = np.clip(edge - r + 0.5, 0.0, 1.0)  # ~1 px anti-aliased outline
    rim = np.clip(1.0 - np.abs(edge + 1.0 - r) / 1.5, 0.0, 1.0)  # just outside the outline
    return alpha, rim


def scene(rng: np.random.Generator, size: int, difficulty: float,
          with_object: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (uint8 size x size x 3 RGB, uint8 size x size mask in {0, 255})."""
    gap = 1.0 - difficulty
    palette = _palette(rng)
    slope, scale = rng.uniform(1.6, 2.6), rng.uniform(1.0, 4.0)
    background = _colourise(_noise(rng, size, slope, scale), palette)
    if not with_object:
        image, mask = background, np.zeros((size, size))
    else:
        shift = rng.normal(0, 1, 3)
        shift = shift / np.linalg.norm(shift) * gap * rng.uniform(0.7, 1.0) * COLOUR_GAP
        obj_palette = np.clip(palette + shift, 0.0, 1.0)
        # The object's grain is finer than the background's (a consistent, local cue) and
        # its outline casts a faint shadow; both fade out as the difficulty grows.
        texture = _noise(rng, size, slope - TEXTURE_GAP * gap, scale * (1.0 - 0.6 * gap))
        obj = _colourise(texture, obj_palette)
        alpha, rim = _blob(rng, size)
        alpha = alpha[..., None]
        background = background * (1.0 - SHADOW * gap * rim[..., None])
        image, mask = background * (1 - alpha) + obj * alpha, alpha[..., 0] >= 0.5
    grain = rng.normal(0, GRAIN, image.shape)
    image = np.clip((image + grain) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return image, (mask * 255).astype(np.uint8)


def _name(rng: np.random.Generator, kind: str, number: int) -> str:
    sup_n, sup, sub_n, sub = CLASSES[rng.integers(len(CLASSES))]
    return f"COD10K-{kind}-{sup_n}-{sup}-{sub_n}-{sub}-{number}"


def _write_split(out: Path, split: str, n: int, n_noncam: int, *, size: int, seed: int,
                 difficulty: float, first_number: int, bar) -> None:
    from PIL import Image

    image_dir, mask_dir = out / split / "Image", out / split / "GT_Object"
    image_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    for i in range(n + n_noncam):
        cam = i < n
        # One generator per image: images depend on (seed, split, index) only.
        rng = np.random.default_rng([seed, _SPLITS[split], i])
        name = _name(rng, "CAM" if cam else "NonCAM", first_number + i)
        image, mask = scene(rng, size, difficulty, with_object=cam)
        Image.fromarray(image).save(image_dir / f"{name}.jpg", quality=95, subsampling=0)
        Image.fromarray(mask).save(mask_dir / f"{name}.png", optimize=False)
        bar.update()


def synth(out: str | Path, *, n_train: int, n_test: int, size: int = 64, seed: int = 0,
          difficulty: float = DEFAULT_DIFFICULTY, noncam: int | None = None,
          force: bool = False) -> Path:
    """Write a synthetic dataset in the COD10K-v3 layout under ``out``; returns its path.

    ``n_train`` / ``n_test`` camouflaged scenes (``n_test`` 0: no Test folder) plus ``noncam``
    NonCAM scenes per split (None: one per ten CAM scenes, at least one). ``out`` must be
    absent or empty, else BadInput, unless ``force``: then its Train and Test folders are
    replaced and anything else in it is left alone. The dataset is written into a temporary
    folder beside ``out`` and moved into place, so an interrupted run leaves no partial split.
    """
    from tqdm import tqdm

    out = Path(out).expanduser()
    if n_train < 1:
        raise BadInput(f"--train must be >= 1 (got {n_train})")
    if n_test < 0:
        raise BadInput(f"--test must be >= 0 (got {n_test})")
    if size < 16:
        raise BadInput(f"--size must be >= 16 pixels (got {size})")
    if not 0.0 <= difficulty <= 1.0:
        raise BadInput(f"--difficulty must lie in [0, 1] (got {difficulty})")
    if seed < 0:
        raise BadInput(f"--seed must be >= 0 (got {seed})")
    if noncam is not None and noncam < 0:
        raise BadInput(f"--noncam must be >= 0 (got {noncam})")
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise BadInput(f"{out} exists and is not empty (use --force to replace its Train/Test)")
    splits = [("Train", n_train)] + ([("Test", n_test)] if n_test else [])
    per_split = {s: (max(1, n // 10) if noncam is None else noncam) for s, n in splits}
    total = sum(n + per_split[s] for s, n in splits)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with tqdm(total=total, desc="synth", unit="img", file=sys.stderr, leave=False,
                  disable=total < 200) as bar:
            number = 1
            for split, n in splits:
                _write_split(tmp, split, n, per_split[split], size=size, seed=seed,
                             difficulty=difficulty, first_number=number, bar=bar)
                number += n + per_split[split]
        out.mkdir(exist_ok=True)
        for split in ("Train", "Test"):
            if (out / split).exists():
                shutil.rmtree(out / split)
            if (tmp / split).exists():
                (tmp / split).rename(out / split)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("synth out=%s train=%d test=%d size=%d seed=%d difficulty=%s", out, n_train,
             n_test, size, seed, difficulty)
    return out


def synth_main(argv: Sequence[str]) -> int:
    """``camotune synth OUT [--train N --test N --size PX --seed S --difficulty D --noncam N
    --force]``: writes the dataset, prints its path on stdout."""
    from camotune.cliutil import Parser, setup_logging

    parser = Parser(prog="camotune synth",
                    description="Write a synthetic camouflage dataset in the COD10K-v3 layout.")
    parser.add_argument("out", help="output folder (absent or empty, unless --force)")
    parser.add_argument("--train", type=int, default=100, help="camouflaged training scenes (default: %(default)s)")
    parser.add_argument("--test", type=int, default=50, help="camouflaged test scenes, 0 = none (default: %(default)s)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--difficulty", type=float, default=DEFAULT_DIFFICULTY,
                        help="0 = object stands out ... 1 = same texture statistics "
                             "(default: %(default)s)")
    parser.add_argument("--noncam", type=int, default=None,
                        help="NonCAM scenes per split (default: one per ten, at least one)")
    parser.add_argument("--force", action="store_true",
                        help="replace OUT/Train and OUT/Test if OUT is not empty")
    args = parser.parse_args(list(argv))
    setup_logging()
    out = synth(args.out, n_train=args.train, n_test=args.test, size=args.size, seed=args.seed,
                difficulty=args.difficulty, noncam=args.noncam, force=args.force)
    print(out.resolve())
    return 0
