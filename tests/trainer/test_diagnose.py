"""camotune diagnose: the report's failing config is caught with the right figures."""

from __future__ import annotations

import json
import math

import pytest

from camotune.cli import main
from camotune.trainer.config import TrainConfig
from camotune.trainer.diagnose import ema_horizon_check, ema_retained, lr_scaling_check

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
    assert "square-root" in check.message and "Adam" in check.message


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
def test_cli_json_has_every_check_and_exits_1_on_fail(capsys: pytest.CaptureFixture) -> None:
    code = main(["diagnose", *SMALL, "--batch-size", "16", "--accumulation-steps", "8",
                 "--lr", "1e-4", "--use-ema", "--no-ema-warmup", "--json"])
    out = capsys.readouterr().out
    report = json.loads(out)
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
