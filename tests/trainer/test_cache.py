"""The decode-once cache: contents, hits, keys, atomic and concurrent builds."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camotune.errors import BadInput
from camotune.trainer import cache
from camotune.trainer.data import Sample, find_train


def make_dataset(root: Path, n: int = 4, size: int = 40) -> list[Sample]:
    img_dir, gt_dir = root / "Train" / "Image", root / "Train" / "GT_Object"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            img_dir / f"im{i}.png")
        mask = np.zeros((size, size), np.uint8)
        mask[:, : size // 2] = 255  # left half is the object
        Image.fromarray(mask).save(gt_dir / f"im{i}.png")
    return find_train(root)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every decode in this process."""
    calls: list[str] = []
    real = cache.decode_pair

    def decode(sample: Sample, size: int):
        calls.append(sample.name)
        return real(sample, size)

    monkeypatch.setattr(cache, "decode_pair", decode)
    return calls


def test_arrays_shapes_values_and_order(tmp_path: Path) -> None:
    samples = make_dataset(tmp_path / "data")
    images, masks = cache.load_split(samples, 16, tmp_path / "c")
    assert isinstance(images, np.memmap) and isinstance(masks, np.memmap)
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.uint8
    assert masks.shape == (4, 16, 16) and masks.dtype == np.uint8
    for i, s in enumerate(samples):
        image, mask = cache.decode_pair(s, 16)
        np.testing.assert_array_equal(images[i], image)
        np.testing.assert_array_equal(masks[i], mask)
    # the left half stays exactly the object after resizing
    assert (masks[:, :, :8] == 1).all() and (masks[:, :, 8:] == 0).all()


def test_second_load_is_a_hit_without_decoding(tmp_path: Path, counted: list[str]) -> None:
    samples = make_dataset(tmp_path / "data")
    first = cache.load_split(samples, 16, tmp_path / "c")
    assert len(counted) == 4
    second = cache.load_split(samples, 16, tmp_path / "c")
    assert len(counted) == 4
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_key_changes_with_a_file_or_the_size(tmp_path: Path, counted: list[str]) -> None:
    samples = make_dataset(tmp_path / "data")
    key = cache.cache_key(samples, 16)
    assert cache.cache_key(samples, 32) != key
    cache.load_split(samples, 16, tmp_path / "c")
    # rewrite one image with other pixels and a later mtime
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(samples[2].image)
    os.utime(samples[2].image, ns=(time.time_ns() + 10**9,) * 2)
    assert cache.cache_key(samples, 16) != key
    images, _ = cache.load_split(samples, 16, tmp_path / "c")
    assert len(counted) == 8
    assert (images[2] == 0).all()


def test_default_folder_comes_from_the_environment(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMOTUNE_CACHE", str(tmp_path / "env-cache"))
    samples = make_dataset(tmp_path / "data", n=1)
    cache.load_split(samples, 16)
    assert (tmp_path / "env-cache" / cache.cache_key(samples, 16) / "images.npy").is_file()
    cache.load_split(samples, 16, "")  # "" is the default too
    assert cache.default_cache_dir() == tmp_path / "env-cache"


def test_entry_is_complete_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    samples = make_dataset(tmp_path / "data")
    cache.load_split(samples, 16, tmp_path / "c")
    key = cache.cache_key(samples, 16)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [key, f"{key}.lock"]
    assert sorted(p.name for p in (tmp_path / "c" / key).iterdir()) == [
        "images.npy", "masks.npy", "meta.json"]


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    samples = make_dataset(tmp_path / "data")
    samples[3].image.write_bytes(b"not a png")
    with pytest.raises(BadInput, match=r"im3\.png: unreadable or corrupt"):
        cache.load_split(samples, 16, tmp_path / "c")
    assert [p.name for p in (tmp_path / "c").iterdir()] == [
        f"{cache.cache_key(samples, 16)}.lock"]


def test_stale_temporary_folder_is_cleaned(tmp_path: Path) -> None:
    samples = make_dataset(tmp_path / "data", n=1)
    key = cache.cache_key(samples, 16)
    (tmp_path / "c" / f".tmp-{key}-crashed").mkdir(parents=True)
    cache.load_split(samples, 16, tmp_path / "c")
    assert not list((tmp_path / "c").glob(".tmp-*"))


def test_damaged_entry_is_rebuilt(tmp_path: Path, counted: list[str]) -> None:
    samples = make_dataset(tmp_path / "data", n=2)
    cache.load_split(samples, 16, tmp_path / "c")
    (tmp_path / "c" / cache.cache_key(samples, 16) / "masks.npy").write_bytes(b"garbage")
    _, masks = cache.load_split(samples, 16, tmp_path / "c")
    assert len(counted) == 4 and masks.shape == (2, 16, 16)


def test_unusable_cache_folder_is_bad_input(tmp_path: Path) -> None:
    samples = make_dataset(tmp_path / "data", n=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput, match="cache folder"):
        cache.load_split(samples, 16, tmp_path / "file" / "sub")


def _build_in_child(samples: list[Sample], folder: str, counter: str, barrier) -> None:
    real = cache.decode_pair

    def slow_decode(sample: Sample, size: int):
        with open(counter, "a") as fh:
            fh.write(sample.name + "\n")
        time.sleep(0.05)  # keep the build open long enough for the other process to wait
        return real(sample, size)

    cache.decode_pair = slow_decode
    barrier.wait()
    cache.load_split(samples, 16, folder)


@pytest.mark.slow
def test_concurrent_builds_decode_once(tmp_path: Path) -> None:
    samples = make_dataset(tmp_path / "data", n=6)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    counter = tmp_path / "decodes.txt"
    procs = [ctx.Process(target=_build_in_child,
                         args=(samples, str(tmp_path / "c"), str(counter), barrier))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(counter.read_text().split()) == 6  # one build, not two
    key = cache.cache_key(samples, 16)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [key, f"{key}.lock"]
    images, _ = cache.load_split(samples, 16, tmp_path / "c")
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(images[i], cache.decode_pair(s, 16)[0])
