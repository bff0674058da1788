"""Synthetic camouflage data: layout, naming, determinism, speed, the CLI, and its difficulty."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camotune.cli import main
from camotune.errors import BadInput
from camotune.trainer.data import find_test_sets, find_train
from camotune.trainer.synth import scene, synth

NAME = re.compile(r"COD10K-(CAM|NonCAM)-\d-[A-Za-z]+-\d+-[A-Za-z]+-\d+")


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layout_and_naming(synth_dataset: Path) -> None:
    for split, cam, noncam in (("Train", 24, 2), ("Test", 8, 1)):
        images = sorted((synth_dataset / split / "Image").iterdir())
        masks = sorted((synth_dataset / split / "GT_Object").iterdir())
        assert [p.stem for p in images] == [p.stem for p in masks]
        assert all(p.suffix == ".jpg" for p in images) and all(p.suffix == ".png" for p in masks)
        assert all(NAME.fullmatch(p.stem) for p in images)
        kinds = [NAME.fullmatch(p.stem).group(1) for p in images]
        assert kinds.count("CAM") == cam and kinds.count("NonCAM") == noncam
        for mask_path in masks:
            mask = np.asarray(Image.open(mask_path))
            assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
            if "-NonCAM-" in mask_path.name:
                assert not mask.any()  # all black, as COD10K-v3 ships them
            else:
                assert 0.01 < (mask > 0).mean() < 0.5
        with Image.open(images[0]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    assert len(find_train(synth_dataset)) == 24
    assert list(find_test_sets(synth_dataset)) == ["COD10K"]
    assert len({p.stem for p in synth_dataset.rglob("*.jpg")}) == 24 + 2 + 8 + 1  # unique


def test_same_arguments_same_bytes(tmp_path: Path) -> None:
    a = synth(tmp_path / "a", n_train=6, n_test=2, size=32, seed=5)
    b = synth(tmp_path / "b", n_train=6, n_test=2, size=32, seed=5)
    c = synth(tmp_path / "c", n_train=6, n_test=2, size=32, seed=6)
    assert digest(a) == digest(b)
    images = [{v for k, v in digest(x).items() if k.endswith(".jpg")} for x in (a, c)]
    assert images[0].isdisjoint(images[1])  # (NonCAM masks are all black everywhere)


def test_more_images_keep_the_first_ones(tmp_path: Path) -> None:
    small = digest(synth(tmp_path / "s", n_train=3, n_test=0, size=32, noncam=0))
    large = digest(synth(tmp_path / "l", n_train=6, n_test=0, size=32, noncam=0))
    assert small.items() <= large.items()
    assert not (tmp_path / "s" / "Test").exists()


def test_hundreds_of_images_in_seconds(tmp_path: Path) -> None:
    start = time.perf_counter()
    synth(tmp_path / "fast", n_train=250, n_test=50, size=64)
    assert time.perf_counter() - start < 10.0


def test_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    synth(out, n_train=2, n_test=1, size=32)  # an empty folder is fine
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(BadInput, match="not empty"):
        synth(out, n_train=3, n_test=0, size=32)
    synth(out, n_train=3, n_test=0, size=32, force=True)
    assert (out / "notes.txt").read_text() == "keep me"
    assert not (out / "Test").exists()
    assert len(list((out / "Train" / "Image").iterdir())) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize(("kwargs", "flag"), [
    ({"n_train": 0}, "--train"), ({"n_test": -1}, "--test"), ({"size": 8}, "--size"),
    ({"difficulty": 1.5}, "--difficulty"), ({"seed": -1}, "--seed"), ({"noncam": -2}, "--noncam"),
])
def test_bad_arguments_name_the_flag(tmp_path: Path, kwargs: dict, flag: str) -> None:
    args = {"n_train": 2, "n_test": 1, **kwargs}
    with pytest.raises(BadInput, match=flag):
        synth(tmp_path / "x", **args)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["synth", str(out), "--train", "4", "--test", "2", "--size", "32",
                 "--seed", "3", "--difficulty", "0.2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out.resolve())
    assert len(find_train(out)) == 4
    assert main(["synth", str(out), "--train", "4"]) == 2
    assert main(["synth", str(tmp_path / "y"), "--train", "many"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if " error: " in line]
    assert len(errors) == 2 and all(e.startswith("camotune synth: error:") for e in errors)
    assert "not empty" in errors[0] and "--train" in errors[1]


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    return float((pred & gt).sum() / max((pred | gt).sum(), 1))


def _colour_threshold_iou(image: np.ndarray, gt: np.ndarray) -> float:
    """The best IoU any threshold along the object/background colour axis can reach (an
    oracle: it knows the mask)."""
    x = image.reshape(-1, 3).astype(float)
    g = gt.reshape(-1)
    proj = x @ (x[g].mean(0) - x[~g].mean(0))
    return max(_iou(proj > q, g) for q in np.quantile(proj, np.linspace(0.02, 0.98, 25)))


def test_difficulty_orders_how_separable_the_object_is() -> None:
    scores = []
    for difficulty in (0.0, 0.4, 1.0):
        pairs = [scene(np.random.default_rng([1, i]), 48, difficulty) for i in range(20)]
        scores.append(np.mean([_colour_threshold_iou(im, m > 0) for im, m in pairs]))
    assert scores[0] > scores[1] > scores[2]
    assert scores[1] < 0.9  # the default is not solved by a colour threshold


def test_baselines_score_low(synth_dataset: Path) -> None:
    gts = [np.asarray(Image.open(s.mask)) > 0 for s in find_train(synth_dataset)]
    assert all(_iou(np.zeros_like(g), g) == 0.0 for g in gts)  # all background
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    radius = np.sqrt(np.mean([g.mean() for g in gts]) * 64 * 64 / np.pi)
    blob = (yy - 32) ** 2 + (xx - 32) ** 2 < radius**2
    assert np.mean([_iou(blob, g) for g in gts]) < 0.25  # objects are not always central
