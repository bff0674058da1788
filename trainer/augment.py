"""Training augmentation: an albumentations pipeline on uint8 H x W x 3 images and H x W masks.

``strength`` s in [0, 2] scales the pipeline: 0 is no augmentation, 1 the default, 2 the
strongest. Probabilities grow with min(s, 1) (a flip is at most a coin toss); magnitudes
(scale, shift, rotation, colour jitter) grow linearly with s.

| transform | probability | magnitude at s |
| --- | --- | --- |
| HorizontalFlip | 0.5 min(s, 1) | |
| VerticalFlip | 0.25 min(s, 1) | |
| RandomRotate90 | 0.25 min(s, 1) | |
| Affine (reflected border) | min(0.5 s, 1) | scale 1 +- 0.15 s, shift +- 0.08 s, rotate +- 10 s deg |
| ColorJitter | min(0.5 s, 1) | brightness, contrast, saturation +- 0.2 s, hue +- 0.03 s |

Masks follow every geometric transform with nearest-neighbour sampling, so they stay {0, 1}.
Results depend only on the input and the seed given to `apply` (each transform gets its own
seed derived from it, so their random draws are independent), never on global RNG state.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def build_augment(strength: float) -> Any | None:
    """The training pipeline for ``strength`` in [0, 2]; None when it is 0 (no augmentation).

    Raises ValueError outside [0, 2] (TrainConfig rejects such values before this point).
    """
    if not 0.0 <= strength <= 2.0:
        raise ValueError(f"augmentation strength must lie in [0, 2], got {strength}")
    if strength == 0.0:
        return None
    # albumentations asks the network for a newer version at import unless told not to;
    # training machines are often offline, and the check must not slow every worker start.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A
    import cv2

    s, p = strength, min(strength, 1.0)
    transforms = [
        A.HorizontalFlip(p=0.5 * p),
        A.VerticalFlip(p=0.25 * p),
        A.RandomRotate90(p=0.25 * p),
        A.Affine(
            scale=(1.0 - 0.15 * s, 1.0 + 0.15 * s),
            translate_percent=(-0.08 * s, 0.08 * s),
            rotate=(-10.0 * s, 10.0 * s),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_REFLECT_101,
            p=min(0.5 * s, 1.0),
        ),
        A.ColorJitter(
            brightness=0.2 * s, contrast=0.2 * s, saturation=0.2 * s, hue=min(0.03 * s, 0.5),
            p=min(0.5 * s, 1.0),
        ),
    ]
    return A.Compose(transforms, seed=0)


def apply(
    pipeline: Any | None, image: np.ndarray, mask: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one (uint8 H x W x 3 image, uint8 H x W mask) pair, deterministically for
    ``seed`` (any int >= 0). With ``pipeline`` None the inputs come back unchanged."""
    if pipeline is None:
        return image, mask
    # Compose.set_random_seed gives every transform the *same* seed, which would correlate
    # their draws (both flips would fire together); derive one seed per transform instead.
    seeds = np.random.SeedSequence(seed).generate_state(len(pipeline.transforms) + 1)
    pipeline.set_random_seed(int(seeds[0]))
    for transform, sub in zip(pipeline.transforms, seeds[1:], strict=True):
        transform.set_random_seed(int(sub))
    out = pipeline(image=image, mask=mask)
    return np.ascontiguousarray(out["image"]), np.ascontiguousarray(out["mask"])
