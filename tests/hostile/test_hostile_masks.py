"""Hostile masks: every way a mask PNG may encode its object is read as the COD datasets
define it (grey > 128; an object drawn only in the alpha channel of a blank mask is read from
alpha), and empty masks are reported with one warning per split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camotune.trainer.cache import decode_pair, load_split
from camotune.trainer.data import Sample, read_mask

SIZE = 32
OBJECT = np.zeros((SIZE, SIZE), bool)
OBJECT[8:24, 4:20] = True
ELSEWHERE = np.zeros((SIZE, SIZE), bool)
ELSEWHERE[0:6, 24:32] = True


def _u8(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.uint8) * 255


def _palette_with_transparency() -> Image.Image:
    im = Image.fromarray(OBJECT.astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 0, 0, 0])  # both entries black: only transparency tells them apart
    im.info["transparency"] = 0
    return im


def _stack(*channels: np.ndarray) -> np.ndarray:
    return np.stack(channels, axis=-1)


ZERO = np.zeros((SIZE, SIZE), np.uint8)
FULL = np.full((SIZE, SIZE), 255, np.uint8)

# name -> (the PNG, the object it must be read as)
MASKS = {
    "grey": (lambda: Image.fromarray(_u8(OBJECT), "L"), OBJECT),
    "rgb": (lambda: Image.fromarray(_stack(*[_u8(OBJECT)] * 3), "RGB"), OBJECT),
    "grey-soft-edges": (lambda: Image.fromarray(np.where(OBJECT, 200, 40).astype(np.uint8), "L"),
                        OBJECT),
    "rgba-object-in-alpha-only": (
        lambda: Image.fromarray(_stack(ZERO, ZERO, ZERO, _u8(OBJECT)), "RGBA"), OBJECT),
    "rgba-white-rgb-object-in-alpha": (
        lambda: Image.fromarray(_stack(FULL, FULL, FULL, _u8(OBJECT)), "RGBA"), OBJECT),
    "rgba-opaque": (lambda: Image.fromarray(_stack(*[_u8(OBJECT)] * 3, FULL), "RGBA"), OBJECT),
    "rgba-grey-wins-over-alpha": (
        lambda: Image.fromarray(_stack(*[_u8(OBJECT)] * 3, _u8(ELSEWHERE)), "RGBA"), OBJECT),
    "la-object-in-alpha-only": (lambda: Image.fromarray(_stack(ZERO, _u8(OBJECT)), "LA"),
                                OBJECT),
    "palette-with-transparency": (_palette_with_transparency, OBJECT),
    "all-black": (lambda: Image.fromarray(ZERO, "L"), np.zeros_like(OBJECT)),
    "rgba-blank-everywhere": (lambda: Image.fromarray(_stack(ZERO, ZERO, ZERO, FULL), "RGBA"),
                              np.zeros_like(OBJECT)),
}


def _sample(folder: Path, name: str) -> Sample:
    make, _ = MASKS[name]
    image = folder / f"{name}.jpg"
    Image.fromarray(np.full((SIZE, SIZE, 3), 120, np.uint8)).save(image)
    mask = folder / f"{name}.png"
    make().save(mask)
    return Sample(image, mask, name)


@pytest.mark.parametrize("name", list(MASKS))
def test_mask_encoding_is_read_as_its_object(name: str, tmp_path: Path) -> None:
    sample = _sample(tmp_path, name)
    expected = MASKS[name][1].astype(np.uint8)
    np.testing.assert_array_equal(read_mask(sample.mask), expected)  # evaluation's reading
    _, decoded = decode_pair(sample, SIZE)  # training's reading (the cache)
    np.testing.assert_array_equal(decoded, expected)


def test_empty_masks_are_counted_in_one_warning_per_split(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    names = ["grey", "all-black", "rgba-blank-everywhere", "rgba-object-in-alpha-only"]
    samples = [_sample(tmp_path, n) for n in names]
    for _ in range(2):  # built, then read from the cache: the warning each time the split loads
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="camotune.trainer.cache"):
            load_split(samples, SIZE, cache_dir=tmp_path / "cache")
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "2 of 4 masks" in warnings[0] and "all-black" in warnings[0]


def test_no_warning_when_every_mask_has_an_object(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    samples = [_sample(tmp_path, n) for n in ("grey", "rgb", "la-object-in-alpha-only")]
    with caplog.at_level(logging.WARNING, logger="camotune.trainer.cache"):
        load_split(samples, SIZE, cache_dir=tmp_path / "cache")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
