"""`camotune evaluate` on a tiny dataset and checkpoint written in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from camotune.cli import main
from camotune.model import build_model
from camotune.trainer.config import TrainConfig, to_dict
from camotune.trainer.data import Sample, read_mask
from camotune.trainer.evaluate import (
    COLUMNS,
    evaluate_checkpoint,
    format_table,
    load_model,
    predict,
)
from camotune.trainer.metrics import SOD_KEYS, SODMetrics

ODD = (45, 37)  # H x W of one ground truth: not a multiple of anything the model uses


def _write_pair(img_dir: Path, gt_dir: Path, name: str, hw: tuple[int, int],
                rng: np.random.Generator) -> None:
    h, w = hw
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : 3 * h // 4, w // 5 : 3 * w // 5] = 255
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[mask > 0] //= 2  # a darker object: something to see
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(img_dir / f"{name}.png")
    Image.fromarray(mask).save(gt_dir / f"{name}.png")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """COD10K-v3 Train/ and Test/ plus TestDataset/{CAMO,CHAMELEON} in one root."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for i in range(5):
        _write_pair(root / "Train/Image", root / "Train/GT_Object", f"train{i}", (40, 48), rng)
    _write_pair(root / "Test/Image", root / "Test/GT_Object", "cod0", ODD, rng)
    _write_pair(root / "Test/Image", root / "Test/GT_Object", "cod1", (50, 64), rng)
    for name, n in (("CHAMELEON", 1), ("CAMO", 2)):
        for i in range(n):
            sub = root / "TestDataset" / name
            _write_pair(sub / "Imgs", sub / "GT", f"{name.lower()}{i}", (33 + i, 41), rng)
    return root


def _config() -> TrainConfig:
    return TrainConfig(backbone="edgenext_xx_small", pretrained=False, img_size=32,
                       num_experts=2, top_k=1, val_fraction=0.4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = _config()
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("run") / "best.pt"
    torch.save({"format": 1, "config": to_dict(cfg), "epoch": 1, "model": model.state_dict(),
                "ema": None, "best_weights": "raw"}, path)
    return path


def test_predictions_are_resized_to_the_original_ground_truth(dataset: Path,
                                                              checkpoint: Path) -> None:
    model, cfg, which = load_model(checkpoint, torch.device("cpu"))
    assert which == "raw" and not cfg.pretrained and not model.training
    samples = [Sample(dataset / f"Test/Image/{n}.png", dataset / f"Test/GT_Object/{n}.png", n)
               for n in ("cod0", "cod1")]
    out = list(predict(model, samples, img_size=cfg.img_size, device=torch.device("cpu"),
                       batch_size=2))
    assert [s.name for s, *_ in out] == ["cod0", "cod1"]
    assert out[0][1].shape == ODD and out[1][1].shape == (50, 64)
    assert all(p.dtype == np.uint8 and fg.dtype == bool for _, p, fg in out)
    # the same map as a hand-made forward pass, the logits resized with bilinear interpolation
    from camotune.trainer.cache import decode_pair
    from camotune.trainer.data import normalize_batch

    image, _ = decode_pair(samples[0], cfg.img_size)
    with torch.no_grad():
        logits = model(normalize_batch(torch.from_numpy(image.copy())[None])).logits
    resized = torch.nn.functional.interpolate(logits, size=ODD, mode="bilinear",
                                              align_corners=False)
    expected = (torch.sigmoid(resized)[0, 0] * 255).round().to(torch.uint8).numpy()
    assert np.abs(out[0][1].astype(int) - expected.astype(int)).max() <= 1
    mismatched = out[0][2] != (resized[0, 0] > 0).numpy()
    assert mismatched.mean() < 0.01  # a pixel whose logit is ~0 may fall either way


def test_one_row_per_test_set_matching_a_direct_computation(dataset: Path,
                                                            checkpoint: Path) -> None:
    table = evaluate_checkpoint(checkpoint, dataset, device="cpu", workers=0, batch_size=3)
    assert list(table.columns) == list(COLUMNS)
    assert table["dataset"].tolist() == ["COD10K", "CAMO", "CHAMELEON"]
    assert table["images"].tolist() == [2, 2, 1]
    assert table[list(SOD_KEYS)].notna().all().all()

    model, cfg, _ = load_model(checkpoint, torch.device("cpu"))
    samples = [Sample(dataset / f"TestDataset/CAMO/Imgs/camo{i}.png",
                      dataset / f"TestDataset/CAMO/GT/camo{i}.png", f"camo{i}") for i in (0, 1)]
    ref = SODMetrics()
    for sample, pred, fg in predict(model, samples, img_size=cfg.img_size,
                                    device=torch.device("cpu")):
        ref.step(pred, read_mask(sample.mask), fg=fg)
    row = table.set_index("dataset").loc["CAMO"]
    for key, value in ref.results().items():
        assert row[key] == pytest.approx(value, abs=1e-12), key
    assert "S_alpha" in format_table(table) and "E_phi mean" in format_table(table)


def test_ema_weights_are_used_when_the_checkpoint_says_so(tmp_path: Path,
                                                          checkpoint: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in state["model"].items()}
    state.update(ema=ema, best_weights="ema")
    path = tmp_path / "ema.pt"
    torch.save(state, path)
    model, _, which = load_model(path, torch.device("cpu"))
    assert which == "ema"
    name, value = next((k, v) for k, v in model.state_dict().items() if v.is_floating_point())
    torch.testing.assert_close(value, ema[name])
    state.update(ema=None)
    torch.save(state, path)
    assert main(["evaluate", "--checkpoint", str(path), "--dataset-path", "."]) == 2


def test_cli_prints_the_table_and_writes_the_csv(dataset: Path, checkpoint: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--dataset-path", str(dataset),
                 "--device", "cpu", "--workers", "0"])
    assert code == 0
    captured = capsys.readouterr()
    assert "S_alpha" in captured.out and "COD10K" in captured.out
    assert "INFO" not in captured.out  # logs go to stderr
    csv = pd.read_csv(checkpoint.parent / "eval_test.csv")
    assert csv["dataset"].tolist() == ["COD10K", "CAMO", "CHAMELEON"]
    assert list(csv.columns) == list(COLUMNS)


def test_cli_val_split_to_a_chosen_output(dataset: Path, checkpoint: Path,
                                          tmp_path: Path) -> None:
    out = tmp_path / "val.csv"
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--dataset-path", str(dataset),
                 "--split", "val", "--output", str(out), "--device", "cpu", "--workers", "0"])
    assert code == 0
    csv = pd.read_csv(out)
    assert csv["dataset"].tolist() == ["val"] and csv["images"].tolist() == [2]  # 0.4 x 5


def _bad(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["evaluate", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def test_bad_inputs_exit_2_with_one_line(dataset: Path, checkpoint: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    ck, ds = str(checkpoint), str(dataset)
    assert "--checkpoint" in _bad(["--checkpoint", str(tmp_path / "nope.pt"),
                                   "--dataset-path", ds], capsys)
    assert "--dataset-path" in _bad(["--checkpoint", ck, "--dataset-path",
                                     str(tmp_path / "nope")], capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no test set" in _bad(["--checkpoint", ck, "--dataset-path", str(empty),
                                  "--device", "cpu"], capsys)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert "junk.pt" in _bad(["--checkpoint", str(junk), "--dataset-path", ds], capsys)
    _bad(["--checkpoint", ck, "--dataset-path", ds, "--split", "train"], capsys)
    _bad(["--dataset-path", ds], capsys)  # --checkpoint is required
    assert "--output" in _bad(["--checkpoint", ck, "--dataset-path", ds, "--output",
                               str(tmp_path / "no/such/dir/x.csv")], capsys)


@pytest.mark.slow
def test_metric_processes_give_the_same_table(dataset: Path, checkpoint: Path) -> None:
    inline = evaluate_checkpoint(checkpoint, dataset, device="cpu", workers=0)
    pooled = evaluate_checkpoint(checkpoint, dataset, device="cpu", workers=2)
    pd.testing.assert_frame_equal(inline, pooled)


@pytest.mark.slow
def test_val_split_reproduces_the_training_history(synth_dataset: Path, tmp_path: Path) -> None:
    """`evaluate --split val` scores the checkpoint's weights as training validated them: the
    same seeded hold-out, masks at the same --eval-size (here not the training size), the
    same IoU definition."""
    from camotune.trainer.history import read_history
    from camotune.trainer.loop import fit

    out = tmp_path / "run"
    cfg = TrainConfig(dataset_path=str(synth_dataset), checkpoint_dir=str(out),
                      backbone="edgenext_xx_small", pretrained=False, img_size=64,
                      eval_size=80, epochs=2, stage1_epochs=1, batch_size=4,
                      accumulation_steps=2, num_workers=0, threads=1, lr=2e-3,
                      full_metrics_every=2, seed=3, val_fraction=0.25)
    fit(cfg)
    history = {r["epoch"]: r for r in read_history(out / "history.csv")}
    for name in ("last.pt", "best.pt"):
        epoch = torch.load(out / name, weights_only=False)["epoch"]
        row = history[epoch]
        table = evaluate_checkpoint(out / name, synth_dataset, split="val", device="cpu",
                                    workers=0, batch_size=5)
        got = table.iloc[0]
        assert got["images"] == 6  # 0.25 x 24
        assert got["iou"] == pytest.approx(row["val_iou_raw"], abs=1e-6), name
        assert got["dice"] == pytest.approx(row["val_dice"], abs=1e-6), name
        if row["val_sm"] is not None:  # the full-metrics epochs (uint8 maps on both sides)
            assert got["sm"] == pytest.approx(row["val_sm"], abs=1e-3)
            assert got["mae"] == pytest.approx(row["val_mae"], abs=1e-3)
