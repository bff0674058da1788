"""Device IoU/Dice, the validation accumulator, and the pysodmetrics wrapper."""

from __future__ import annotations

import math
import pickle

import numpy as np
import py_sod_metrics as psm
import pytest
import torch

from camotune.trainer.metrics import (
    SOD_KEYS,
    SODMetrics,
    ValAccumulator,
    fg_ratio,
    iou_dice,
    score_pairs,
    to_uint8_gt,
    to_uint8_pred,
)


def _logits(binary: torch.Tensor) -> torch.Tensor:
    return torch.where(binary > 0.5, 5.0, -5.0)


def _square(size: int = 8, rows: slice = slice(0, 4), cols: slice = slice(0, 8)) -> torch.Tensor:
    m = torch.zeros(1, 1, size, size)
    m[..., rows, cols] = 1.0
    return m


def test_perfect_empty_and_half_overlap() -> None:
    gt = _square()  # top half: 32 of 64 pixels
    left = _square(rows=slice(0, 8), cols=slice(0, 4))  # left half: overlaps gt on 16 pixels
    empty = torch.zeros_like(gt)
    logits = _logits(torch.cat([gt, empty, left]))
    masks = torch.cat([gt, gt, gt])
    iou, dice = iou_dice(logits, masks)
    assert iou.shape == dice.shape == (3,)
    torch.testing.assert_close(iou, torch.tensor([1.0, 0.0, 16 / 48]))
    torch.testing.assert_close(dice, torch.tensor([1.0, 0.0, 0.5]))


def test_empty_empty_is_one_and_empty_gt_with_prediction_is_zero() -> None:
    empty = torch.zeros(2, 1, 4, 4)
    pred = empty.clone()
    pred[1, 0, 0, 0] = 1.0
    iou, dice = iou_dice(_logits(pred), empty)
    torch.testing.assert_close(iou, torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(dice, torch.tensor([1.0, 0.0]))


def test_threshold_is_logit_zero() -> None:
    gt = torch.ones(1, 1, 1, 2)
    iou, _ = iou_dice(torch.tensor([[[[1e-3, -1e-3]]]]), gt)
    assert iou.item() == 0.5
    torch.testing.assert_close(fg_ratio(torch.tensor([[[[1e-3, -1e-3]]]]), 0.0),
                               torch.tensor([0.5]))
    torch.testing.assert_close(fg_ratio(torch.cat([_square(), torch.zeros(1, 1, 8, 8)])),
                               torch.tensor([0.5, 0.0]))


def test_val_accumulator_equals_per_image_python(seed: int) -> None:
    acc = ValAccumulator()
    rows, losses = [], []
    for b in (3, 1, 4):
        logits = torch.randn(b, 1, 6, 6) * 2 - 0.5
        masks = (torch.rand(b, 1, 6, 6) > 0.6).float()
        masks[0] = 0.0  # an empty mask in every batch
        loss = torch.rand(())
        acc.update(logits, masks, loss)
        losses += [loss.item()] * b
        for lg, m in zip(logits, masks, strict=True):
            p = (torch.sigmoid(lg) > 0.5).flatten().tolist()
            g = (m > 0.5).flatten().tolist()
            inter = sum(a and c for a, c in zip(p, g, strict=True))
            union = sum(a or c for a, c in zip(p, g, strict=True))
            iou = 1.0 if union == 0 else inter / union
            dice = 1.0 if sum(p) + sum(g) == 0 else 2 * inter / (sum(p) + sum(g))
            rows.append((iou, dice, sum(p) / len(p), sum(g) / len(g)))
    got = acc.compute()
    assert got["images"] == 8
    for i, key in enumerate(("iou", "dice", "fg_ratio", "gt_fg_ratio")):
        assert got[key] == pytest.approx(sum(r[i] for r in rows) / len(rows), abs=1e-6), key
    assert got["loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-6)


def test_val_accumulator_syncs_once_and_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    acc = ValAccumulator()
    for name in ("item", "__bool__", "__float__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, lambda *a, **k: pytest.fail("host sync"))
    acc.update(torch.ones(2, 1, 4, 4), torch.ones(2, 1, 4, 4))
    monkeypatch.undo()
    got = acc.compute()
    assert got == {"iou": 1.0, "dice": 1.0, "fg_ratio": 1.0, "gt_fg_ratio": 1.0, "images": 2}
    acc.reset()
    got = acc.compute()
    assert got["images"] == 0 and math.isnan(got["iou"])


# -- pysodmetrics ---------------------------------------------------------------------------

def _pairs(seed: int, n: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = 30 + 3 * i, 41 - 2 * i
        gt = np.zeros((h, w), np.uint8)
        gt[5 : h - 8, 7 : w - 5] = 255
        noise = rng.normal(0, 0.25, (h, w))
        pred = np.clip(gt / 255 * 0.8 + 0.1 + noise, 0, 1)
        out.append(((pred * 255).astype(np.uint8), gt))
    return out


def _reference(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """pysodmetrics called directly, as PySODEvalToolkit does."""
    sm, em, wfm, mae = psm.Smeasure(), psm.Emeasure(), psm.WeightedFmeasure(), psm.MAE()
    fmv2 = psm.FmeasureV2(metric_handlers={
        "fm": psm.FmeasureHandler(with_dynamic=True, with_adaptive=False, beta=0.3),
        "iou": psm.IOUHandler(with_dynamic=False, with_adaptive=False, with_binary=True),
        "dice": psm.DICEHandler(with_dynamic=False, with_adaptive=False, with_binary=True),
    })
    for pred, gt in pairs:
        for m in (sm, em, wfm, mae, fmv2):
            m.step(pred=pred, gt=gt)
    e, f = em.get_results()["em"], fmv2.get_results()
    return {"sm": sm.get_results()["sm"], "em_mean": e["curve"].mean(),
            "em_max": e["curve"].max(), "em_adp": e["adp"], "wfm": wfm.get_results()["wfm"],
            "fm_mean": f["fm"]["dynamic"].mean(), "fm_max": f["fm"]["dynamic"].max(),
            "mae": mae.get_results()["mae"], "iou_minmax": f["iou"]["binary"],
            "dice_minmax": f["dice"]["binary"], **_thresholded(pairs)}


def _thresholded(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """IoU/Dice of pred > 0.5 (uint8 > 127) per image, averaged, counted by hand."""
    ious, dices = [], []
    for pred, gt in pairs:
        p, g = pred > 127, gt > 128
        inter, total = int((p & g).sum()), int(p.sum() + g.sum())
        ious.append(1.0 if total == 0 else inter / (total - inter))
        dices.append(1.0 if total == 0 else 2 * inter / total)
    return {"iou": float(np.mean(ious)), "dice": float(np.mean(dices))}


def test_sod_metrics_agree_with_pysodmetrics(seed: int) -> None:
    pairs = _pairs(seed)
    ours = SODMetrics()
    for pred, gt in pairs:
        ours.step(pred, gt)
    got, ref = ours.results(), _reference(pairs)
    assert set(got) == {*SOD_KEYS, "images"} and got["images"] == len(pairs)
    for key in SOD_KEYS:
        assert got[key] == pytest.approx(float(ref[key]), abs=1e-12), key
        assert 0.0 <= got[key] <= 1.001


def test_iou_is_sigmoid_above_half_and_the_minmax_variant_has_its_own_name() -> None:
    """A faint prediction (every probability below 0.5) has no foreground, so IoU = 0; the
    library's min-max normalisation stretches it to 0..1 and finds the object (IoU 1)."""
    gt = np.zeros((20, 20), np.uint8)
    gt[5:15, 5:15] = 255
    faint = np.where(gt > 0, 0.45, 0.05)
    m = SODMetrics()
    m.step(faint, gt)
    r = m.results()
    assert r["iou"] == 0.0 and r["dice"] == 0.0
    assert r["iou_minmax"] == pytest.approx(1.0) and r["dice_minmax"] == pytest.approx(1.0)
    # an explicit foreground map (the resized logits > 0) wins over the probability map
    m = SODMetrics()
    m.step(faint, gt, fg=gt > 0)
    assert m.results()["iou"] == 1.0


def test_inputs_in_any_accepted_form_give_the_same_scores(seed: int) -> None:
    pairs = _pairs(seed, 2)
    as_uint8, as_float = SODMetrics(), SODMetrics()
    for pred, gt in pairs:
        as_uint8.step(pred, gt)
        as_float.step(pred / 255.0, gt > 128)  # float [0, 1] and a bool / {0, 1} mask
    assert as_uint8.results() == as_float.results()


def test_perfect_and_all_background_predictions() -> None:
    gt = np.zeros((45, 37), np.uint8)
    gt[10:30, 5:25] = 255
    perfect = SODMetrics()
    perfect.step(gt.copy(), gt)
    r = perfect.results()
    for key in ("sm", "em_max", "em_adp", "wfm", "fm_max", "iou", "dice"):
        # E-measure divides by (H*W - 1): a perfect map scores 1 + 1/(H*W - 1)
        assert r[key] == pytest.approx(1.0, abs=1e-3), key
    # the mean curves include the threshold 0, where every pixel counts as foreground
    assert 0.99 < r["em_mean"] < 1.0 and 0.99 < r["fm_mean"] < 1.0
    assert r["mae"] == 0.0
    empty = SODMetrics()
    empty.step(np.zeros_like(gt), gt)
    r = empty.results()
    assert r["iou"] == 0.0 and r["dice"] == 0.0 and r["wfm"] == 0.0
    assert r["mae"] == pytest.approx((gt > 0).mean())
    assert r["sm"] < 0.5  # the collapse signature


def test_merge_equals_one_pass_and_survives_pickling(seed: int) -> None:
    pairs = _pairs(seed, 5)
    whole = score_pairs(pairs)
    merged = pickle.loads(pickle.dumps(score_pairs(pairs[3:])))
    merged = score_pairs(pairs[:3]).merge(merged)
    a, b = whole.results(), merged.results()
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-12), key


def test_bad_inputs() -> None:
    m = SODMetrics()
    with pytest.raises(ValueError, match="shapes"):
        m.step(np.zeros((4, 5), np.uint8), np.zeros((5, 4), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_uint8_pred(np.full((2, 2), 1.5))
    with pytest.raises(ValueError, match="no image"):
        m.results()
    assert to_uint8_gt(np.array([[0, 1]], np.uint8)).tolist() == [[0, 255]]
    assert to_uint8_pred(np.array([[0.0, 0.5, 1.0]])).tolist() == [[0, 128, 255]]
