"""Dataset discovery and reading: every layout, stray files, NonCAM, and each bad-data case."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from camotune.errors import BadInput
from camotune.trainer.cache import decode_pair
from camotune.trainer.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Sample,
    find_test_sets,
    find_train,
    masks_to_float,
    normalize_batch,
    read_image,
    read_mask,
)


def write_pair(img_dir: Path, gt_dir: Path | None, name: str, *, size=(20, 16),
               ext: str = ".jpg", mask_size=None) -> None:
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        img_dir / f"{name}{ext}")
    if gt_dir is not None:
        gt_dir.mkdir(parents=True, exist_ok=True)
        w, h = mask_size or size
        mask = np.zeros((h, w), np.uint8)
        mask[: h // 2] = 255
        Image.fromarray(mask).save(gt_dir / f"{name}.png")


def add_strays(folder: Path) -> None:
    (folder / "Thumbs.db").write_bytes(b"\x00junk")
    (folder / ".DS_Store").write_bytes(b"\x00junk")
    (folder / "._COD10K-CAM-1-Aquatic-1-BatFish-9.jpg").write_bytes(b"\x00appledouble")
    (folder / "readme.txt").write_text("not an image")
    (folder / "subfolder").mkdir()


CAM = ["COD10K-CAM-2-Terrestrial-23-Cat-7", "COD10K-CAM-1-Aquatic-1-BatFish-3"]
NONCAM = "COD10K-NonCAM-5-Other-70-Other-5"


def cod10k(root: Path, split: str = "Train") -> Path:
    for name in [*CAM, NONCAM]:
        write_pair(root / split / "Image", root / split / "GT_Object", name)
    (root / split / "GT_Edge").mkdir()
    add_strays(root / split / "Image")
    add_strays(root / split / "GT_Object")
    return root


def test_cod10k_layout_keeps_cam_sorted_and_ignores_strays(tmp_path: Path) -> None:
    samples = find_train(cod10k(tmp_path))
    assert [s.name for s in samples] == sorted(CAM)
    for s in samples:
        assert s.image == tmp_path / "Train" / "Image" / f"{s.name}.jpg"
        assert s.mask == tmp_path / "Train" / "GT_Object" / f"{s.name}.png"
    assert find_test_sets(tmp_path) == {}


def test_cod10k_noncam_without_mask_is_skipped(tmp_path: Path) -> None:
    root = cod10k(tmp_path)
    (root / "Train" / "GT_Object" / f"{NONCAM}.png").unlink()
    assert [s.name for s in find_train(root)] == sorted(CAM)


def test_cod10k_test_split_is_named_cod10k(tmp_path: Path) -> None:
    root = cod10k(cod10k(tmp_path), "Test")
    sets = find_test_sets(root)
    assert list(sets) == ["COD10K"]
    assert [s.name for s in sets["COD10K"]] == sorted(CAM)


def test_redistribution_layout_with_any_subset_of_test_sets(tmp_path: Path) -> None:
    for i in range(3):
        write_pair(tmp_path / "TrainDataset" / "Imgs", tmp_path / "TrainDataset" / "GT",
                   f"camourflage_{i:05d}")
    add_strays(tmp_path / "TrainDataset" / "Imgs")
    for name in ("NC4K", "CAMO"):
        write_pair(tmp_path / "TestDataset" / name / "Imgs", tmp_path / "TestDataset" / name / "GT",
                   "7", ext=".png")
    (tmp_path / "TestDataset" / ".DS_Store").write_bytes(b"x")
    assert [s.name for s in find_train(tmp_path)] == [f"camourflage_{i:05d}" for i in range(3)]
    sets = find_test_sets(tmp_path)
    assert sorted(sets) == ["CAMO", "NC4K"]
    assert sets["NC4K"] == [Sample(tmp_path / "TestDataset/NC4K/Imgs/7.png",
                                   tmp_path / "TestDataset/NC4K/GT/7.png", "7")]


def test_camo_layout_shares_one_gt_folder(tmp_path: Path) -> None:
    for i in (1, 2, 3):
        write_pair(tmp_path / "Images" / "Train", tmp_path / "GT", f"camourflage_{i:05d}")
    write_pair(tmp_path / "Images" / "Test", tmp_path / "GT", "camourflage_00004")
    assert [s.name for s in find_train(tmp_path)] == [f"camourflage_{i:05d}" for i in (1, 2, 3)]
    assert [s.name for s in find_test_sets(tmp_path)["CAMO"]] == ["camourflage_00004"]


def test_accepts_string_paths_and_png_images(tmp_path: Path) -> None:
    write_pair(tmp_path / "Train" / "Image", tmp_path / "Train" / "GT_Object", "a", ext=".png")
    assert find_train(str(tmp_path))[0].image.suffix == ".png"


# -- bad data -------------------------------------------------------------------------------

def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does-not-exist"):
        find_train(tmp_path / "does-not-exist")


def test_unknown_layout_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    with pytest.raises(BadInput, match=re.escape(f"{tmp_path}: no training split")):
        find_train(tmp_path)


def test_missing_mask_folder(tmp_path: Path) -> None:
    write_pair(tmp_path / "Train" / "Image", None, CAM[0])
    with pytest.raises(BadInput, match=r"missing folder .*GT_Object"):
        find_train(tmp_path)


def test_image_without_mask_names_the_image(tmp_path: Path) -> None:
    root = cod10k(tmp_path)
    write_pair(root / "Train" / "Image", None, "COD10K-CAM-3-Flying-50-Bat-9")
    with pytest.raises(BadInput, match=r"COD10K-CAM-3-Flying-50-Bat-9\.jpg: image has no mask"):
        find_train(root)


def test_mask_without_image_names_the_mask(tmp_path: Path) -> None:
    root = cod10k(tmp_path)
    (root / "Train" / "Image" / f"{CAM[1]}.jpg").unlink()
    with pytest.raises(BadInput, match=rf"{CAM[1]}\.png: mask has no image"):
        find_train(root)


def test_camo_mask_of_neither_split(tmp_path: Path) -> None:
    write_pair(tmp_path / "Images" / "Train", tmp_path / "GT", "camourflage_00001")
    write_pair(tmp_path / "Images" / "Other", tmp_path / "GT", "stray_mask")
    with pytest.raises(BadInput, match=r"stray_mask\.png: mask has no image"):
        find_train(tmp_path)


def test_empty_split(tmp_path: Path) -> None:
    (tmp_path / "TrainDataset" / "GT").mkdir(parents=True)
    (tmp_path / "TrainDataset" / "Imgs").mkdir()
    add_strays(tmp_path / "TrainDataset" / "Imgs")
    with pytest.raises(BadInput, match="Imgs: no images"):
        find_train(tmp_path)


def test_split_of_only_noncam_images_is_empty(tmp_path: Path) -> None:
    write_pair(tmp_path / "Train" / "Image", tmp_path / "Train" / "GT_Object", NONCAM)
    with pytest.raises(BadInput, match="no images"):
        find_train(tmp_path)


def test_malformed_test_set_names_its_folder(tmp_path: Path) -> None:
    (tmp_path / "TestDataset" / "CHAMELEON" / "Imgs").mkdir(parents=True)
    with pytest.raises(BadInput, match=r"missing folder .*CHAMELEON/GT"):
        find_test_sets(tmp_path)


def test_two_images_with_one_stem(tmp_path: Path) -> None:
    write_pair(tmp_path / "Train" / "Image", tmp_path / "Train" / "GT_Object", "a")
    write_pair(tmp_path / "Train" / "Image", None, "a", ext=".png")
    with pytest.raises(BadInput, match="two files named a"):
        find_train(tmp_path)


def test_corrupt_image_is_named_when_decoded(tmp_path: Path) -> None:
    root = cod10k(tmp_path)
    bad = root / "Train" / "Image" / f"{CAM[0]}.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated JPEG
    sample = next(s for s in find_train(root) if s.name == CAM[0])
    with pytest.raises(BadInput, match=rf"{CAM[0]}\.jpg: unreadable or corrupt"):
        decode_pair(sample, 32)
    with pytest.raises(BadInput, match=rf"{CAM[0]}\.jpg: unreadable or corrupt"):
        read_image(bad)


def test_mask_size_mismatch_is_named(tmp_path: Path) -> None:
    write_pair(tmp_path / "Train" / "Image", tmp_path / "Train" / "GT_Object", "x",
               size=(20, 16), mask_size=(16, 20))
    (sample,) = find_train(tmp_path)
    with pytest.raises(BadInput, match=r"x\.png: mask is 16x20 but its image x\.jpg is 20x16"):
        decode_pair(sample, 32)


# -- reading and normalising ------------------------------------------------------------------

def test_read_image_converts_grey_to_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.full((5, 7), 77, np.uint8)).save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.shape == (5, 7, 3) and image.dtype == np.uint8 and (image == 77).all()


def test_read_mask_binarises_above_128(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 128, 129, 255]], np.uint8)).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").tolist() == [[0, 0, 1, 1]]


def test_normalize_batch_shape_and_values() -> None:
    mean = torch.tensor(IMAGENET_MEAN)
    std = torch.tensor(IMAGENET_STD)
    images = torch.randint(0, 256, (2, 4, 6, 3), dtype=torch.uint8)
    x = normalize_batch(images)
    assert x.shape == (2, 3, 4, 6) and x.dtype == torch.float32 and x.is_contiguous()
    back = (x.permute(0, 2, 3, 1) * std + mean) * 255
    assert torch.allclose(back, images.float(), atol=1e-3)
    with pytest.raises(ValueError, match="uint8"):
        normalize_batch(images.float())


def test_masks_to_float() -> None:
    masks = torch.tensor([[[0, 1], [1, 0]]], dtype=torch.uint8)
    out = masks_to_float(masks)
    assert out.shape == (1, 1, 2, 2) and out.dtype == torch.float32
    assert out.flatten().tolist() == [0.0, 1.0, 1.0, 0.0]
