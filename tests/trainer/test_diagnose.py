"""camotune diagnose: the report's failing config is caught with the right figures."""

from __future__ import annotations

import json
import math

import pytest

from camotune.cli import main
from camotune.trainer.config import TrainConfig
from camotune.trainer.diagnose import (
    ema_horizon_check,
    ema_retained,
    lr_scaling_check,
    optimizer_steps_check,
)

SMALL = ["--backbone", "edgenext_xx_small", "--no-pretrained"]


def test_report_failing_config_is_40x_too_small_linear_and_fails() -> None:
    failing = TrainConfig(batch_size=16, accumulation_steps=8, lr=1e-4)
    check = lr_scaling_check(failing, ref_batch=2, ref_accumulation=4, ref_lr=2.5e-4)
    f = check.figures
    assert check.status == "FAIL"
    assert (f["effective_batch"], f["reference_effective_batch"]) == (128, 8)
    assert f["recommended_lr_linear"] == pytest.approx(0.004)
    assert f["ratio_linear"] == pytest.approx(40.0)
    assert f["recommended_lr_sqrt"] == pytest.approx(0.001)
    assert f["ratio_sqrt"] == pytest.approx(10.0)
    assert f["rule"] == "sqrt" and f["recommended_lr"] == pytest.approx(0.001)
    assert "square-root" in check.message and "AdamW" in check.message


@pytest.mark.parametrize(("lr", "status"), [
    (1e-3, "PASS"),    # the square-root recommendation at 128 vs 2.5e-4 at 8
    (5e-4, "PASS"),    # 0.5x of it
    (2e-3, "PASS"),    # 2x of it
    (3e-3, "WARN"),    # past 2x, short of the linear rule's 4e-3
    (4e-3, "WARN"),    # the linear recommendation itself
    (8e-3, "FAIL"),    # 8x the square-root recommendation (the old range passed it)
    (4e-4, "FAIL"),    # below 0.5x
    (1e-4, "FAIL"),    # the report's config: 10x below
])
def test_lr_range_is_centred_on_the_square_root_rule_for_adamw(lr: float, status: str) -> None:
    cfg = TrainConfig(batch_size=16, accumulation_steps=8, lr=lr)
    check = lr_scaling_check(cfg, ref_batch=2, ref_accumulation=4, ref_lr=2.5e-4)
    assert check.status == status, check.message
    assert (check.figures["safe_low"], check.figures["safe_high"]) == pytest.approx((5e-4, 2e-3))
    assert check.figures["warn_high"] == pytest.approx(4e-3)


def test_sgd_centres_on_the_linear_rule() -> None:
    cfg = TrainConfig(batch_size=16, accumulation_steps=8, lr=4e-3)
    check = lr_scaling_check(cfg, ref_batch=2, ref_accumulation=4, ref_lr=2.5e-4,
                             optimizer="sgd")
    assert check.status == "PASS" and check.figures["rule"] == "linear"
    cfg = TrainConfig(batch_size=16, accumulation_steps=8, lr=1e-3)  # sqrt's: WARN for SGD
    assert lr_scaling_check(cfg, ref_batch=2, ref_accumulation=4, ref_lr=2.5e-4,
                            optimizer="sgd").status == "WARN"


def test_stage2_is_checked_with_its_own_batch_and_lr() -> None:
    # stage 1 as proven; stage 2 at micro-batch 16 x 8 with stage2_lr 8e-3: 8x the sqrt rule
    cfg = TrainConfig(batch_size=2, accumulation_steps=4, lr=2.5e-4, stage2_batch_size=32,
                      stage2_lr=8e-3)
    s1 = lr_scaling_check(cfg, ref_batch=2, ref_accumulation=4, ref_lr=2.5e-4, stage=1)
    s2 = lr_scaling_check(cfg, ref_batch=2, ref_accumulation=4, ref_lr=2.5e-4, stage=2)
    assert (s1.name, s1.status) == ("lr_scaling", "PASS")
    assert (s2.name, s2.status, s2.figures["stage"]) == ("lr_scaling_stage2", "FAIL", 2)
    assert s2.figures["effective_batch"] == 128
    assert s2.figures["recommended_lr_sqrt"] == pytest.approx(1e-3)
    assert s2.figures["ratio_sqrt"] == pytest.approx(1e-3 / 8e-3)


def test_proven_config_passes_lr_scaling() -> None:
    proven = TrainConfig(batch_size=2, accumulation_steps=4, lr=2.5e-4)
    check = lr_scaling_check(proven, ref_batch=2, ref_accumulation=4, ref_lr=2.5e-4)
    assert check.status == "PASS" and check.figures["ratio_linear"] == pytest.approx(1.0)


def test_ema_without_warmup_holds_the_initial_weights() -> None:
    # decay 0.9999 and no warmup: after ~1,400 steps ~87% of the start is still there.
    assert ema_retained(0.9999, 1400, warmup=False) == pytest.approx(0.9999 ** 1400)
    assert ema_retained(0.9999, 1400, warmup=False) == pytest.approx(0.869, abs=1e-3)
    assert ema_retained(0.9999, 1400, warmup=True) < 1e-6
    assert ema_retained(0.9, 0, warmup=False) == 1.0


def test_ema_horizon_fails_above_half() -> None:
    original = TrainConfig(use_ema=True, ema_decay=0.9999, ema_warmup=False, batch_size=16,
                           accumulation_steps=8, epochs=40, stage1_epochs=30)
    check = ema_horizon_check(original, n_train=3636)  # 4040 with 10% held out
    assert check.status == "FAIL"
    steps = check.figures["stage1_optimizer_steps"]
    assert steps == 30 * math.ceil(math.ceil(3636 / 16) / 8)
    assert check.figures["init_weight_retained"] == pytest.approx(0.9999 ** steps)
    assert ema_horizon_check(TrainConfig(use_ema=True, ema_warmup=True), 3636).status == "PASS"


@pytest.mark.slow
def test_warmup_share_counts_a_warmup_fraction() -> None:
    cfg = TrainConfig(batch_size=4, accumulation_steps=1, epochs=10, stage1_epochs=5,
                      warmup_steps=0, warmup_fraction=0.4)
    check = optimizer_steps_check(cfg, 400, has_batchnorm=False)
    assert check.figures["warmup_steps"] == round(0.4 * check.figures["total_steps"]) > 0
    assert check.status == "WARN" and "warmup is 40% of all optimizer steps" in check.message


def test_cli_json_has_every_check_and_exits_1_on_fail(capsys: pytest.CaptureFixture) -> None:
    code = main(["diagnose", *SMALL, "--batch-size", "16", "--accumulation-steps", "8",
                 "--lr", "1e-4", "--use-ema", "--no-ema-warmup", "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 1 and report["status"] == "FAIL"
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) >= {"model_output", "loss", "gradient_flow", "lr_scaling",
                           "ema_horizon", "optimizer_steps"}
    for name in ("model_output", "loss", "gradient_flow"):
        assert checks[name]["status"] == "PASS", checks[name]
    assert checks["lr_scaling"]["ratio_linear"] == pytest.approx(40.0)
    assert checks["lr_scaling"]["recommended_lr_linear"] == pytest.approx(0.004)
    assert checks["ema_horizon"]["status"] == "FAIL"
    assert checks["gradient_flow"]["stage1_without_grad"] == 0
    assert checks["gradient_flow"]["stage2_backbone_grad_norm"] > 0
    assert checks["lr_scaling_stage2"]["stage"] == 2  # the default run has a stage 2
    progress = [line.split() for line in captured.err.splitlines()
                if line.startswith("diagnose: ")]
    assert progress[0][1] == "model" and "probe" in progress[0][2]
    assert [(w[1], w[2]) for w in progress[1:]] == [(c["status"], c["name"])
                                                   for c in report["checks"]]


def test_cli_counts_real_training_images(synth_dataset, capsys: pytest.CaptureFixture) -> None:
    code = main(["diagnose", *SMALL, "--dataset-path", str(synth_dataset), "--img-size", "64",
                 "--epochs", "2", "--stage1-epochs", "1", "--json"])
    report = json.loads(capsys.readouterr().out)
    steps = next(c for c in report["checks"] if c["name"] == "optimizer_steps")
    assert steps["train_images"] == 22  # 24 camouflaged scenes, 2 held out for validation
    assert code == 0 or report["status"] == "FAIL"


def test_cli_bad_reference_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["diagnose", *SMALL, "--reference-lr", "0"]) == 2
    assert "--reference-lr" in capsys.readouterr().err
