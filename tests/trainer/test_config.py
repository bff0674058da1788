"""TrainConfig: generated flags, exact round trip, validation naming the flag, derived values."""

from __future__ import annotations

import dataclasses
import math
import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from camotune.cli import main
from camotune.errors import BadInput
from camotune.trainer.config import (
    DEFAULTS,
    FIELDS,
    TrainConfig,
    flag,
    from_argv,
    from_dict,
    load_yaml,
    to_argv,
)

ORIGINAL_SCRIPT_FLAGS = (
    "--dataset-path --checkpoint-dir --backbone --num-experts --batch-size --stage2-batch-size "
    "--accumulation-steps --img-size --epochs --stage1-epochs --lr --num-workers "
    "--progressive-unfreeze --deep-supervision --use-ema"
).split()
REQUIRED_FLAGS = (
    "--ema-decay --ema-warmup --no-ema-warmup --weight-decay --stage2-lr --backbone-lr-scale "
    "--warmup-steps --scheduler --min-lr --grad-clip --amp --seed --threads --pretrained "
    "--no-pretrained --pretrained-path --resume-from --val-fraction --device "
    "--deep-supervision-weight --lr-scaling --lr-reference-batch --workers-per-trial "
    "--full-metrics-every"
).split()

# The report's proven command, flags of the original training script.
PROVEN = ("--dataset-path D --checkpoint-dir C --backbone edgenext_base --num-experts 7 "
          "--batch-size 2 --stage2-batch-size 1 --accumulation-steps 4 --img-size 384 "
          "--epochs 120 --stage1-epochs 30 --lr 0.00025 --num-workers 4 "
          "--progressive-unfreeze").split()


def test_help_lists_every_original_and_required_flag(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in ORIGINAL_SCRIPT_FLAGS + REQUIRED_FLAGS:
        assert name in text, name


def test_every_field_is_a_flag() -> None:
    for name in FIELDS:
        cfg = from_argv(to_argv(DEFAULTS))
        assert getattr(cfg, name) == getattr(DEFAULTS, name)
    assert len(set(map(flag, FIELDS))) == len(FIELDS)


def test_proven_command_parses_with_the_original_meaning() -> None:
    cfg = from_argv(PROVEN)
    assert (cfg.batch_size, cfg.stage2_batch, cfg.accumulation_steps) == (2, 1, 4)
    assert cfg.effective_batch(1) == 8 and cfg.effective_batch(2) == 4
    assert (cfg.epochs, cfg.stage1_epochs, cfg.stage2_epochs) == (120, 30, 90)
    assert cfg.progressive_unfreeze and not cfg.use_ema and not cfg.deep_supervision
    assert cfg.resolved_lr(1) == 0.00025


def test_later_flag_wins() -> None:
    assert from_argv(["--lr", "0.1", "--lr", "0.2"]).lr == 0.2
    assert from_argv(["--use-ema", "--no-use-ema"]).use_ema is False


def _values():
    # Valid configs: each field drawn from values the validator accepts.
    epochs = st.integers(1, 500)
    return st.fixed_dictionaries({
        "dataset_path": _paths(),
        "checkpoint_dir": _paths(),
        "resume_from": _paths(),
        "batch_size": st.integers(1, 64),
        "stage2_batch_size": st.integers(0, 64),
        "accumulation_steps": st.integers(1, 16),
        "img_size": st.integers(1, 24).map(lambda k: 32 * k),
        "epochs": epochs,
        "lr": st.floats(1e-8, 1.0, allow_subnormal=False),
        "stage2_lr": st.floats(0.0, 1.0, allow_subnormal=False),
        "min_lr": st.floats(0.0, 1e-3),
        "ema_decay": st.floats(0.0, 0.99999),
        "weight_decay": st.floats(0.0, 1.0),
        "use_ema": st.booleans(),
        "progressive_unfreeze": st.booleans(),
        "deep_supervision": st.booleans(),
        "lr_scaling": st.sampled_from(["none", "sqrt", "linear"]),
        "amp": st.sampled_from(["auto", "bf16", "fp16", "off"]),
        "seed": st.integers(0, 2**31 - 1),
        "val_fraction": st.floats(0.01, 0.99),
        "backbone": st.sampled_from(["edgenext_xx_small", "edgenext_base", "resnet18"]),
    })


def _paths():
    # Any text, and on purpose what argparse would take for a flag: "-data", "--x", "-1".
    # A value of exactly "--" is the one argparse (3.11) drops even when attached with "=".
    dashed = st.text(max_size=12).map(lambda t: "-" + t)
    awkward = st.sampled_from(["-data", "--data", "-", "---", "-1", "--lr", "a b", "'q\"", "a=b"])
    return st.one_of(st.text(max_size=20), dashed, awkward).filter(lambda t: t != "--")


@settings(max_examples=150, deadline=None)  # with the fixed profile of tests/conftest.py
@given(values=_values(), stage1=st.floats(0, 1))
def test_argv_round_trip_is_exact(values: dict, stage1: float) -> None:
    values["stage1_epochs"] = int(stage1 * values["epochs"])
    cfg = TrainConfig(**values)
    assert from_argv(to_argv(cfg)) == cfg
    assert from_argv(to_argv(cfg, minimal=True)) == cfg
    # command.txt is shlex.join of the argv: the shell's split gives the same argv back.
    line = shlex.join(["camotune", "train", *to_argv(cfg, minimal=True)])
    assert from_argv(shlex.split(line)[2:]) == cfg


def test_dashed_path_is_attached_with_equals() -> None:
    cfg = dataclasses.replace(DEFAULTS, dataset_path="-data", checkpoint_dir="--out")
    argv = to_argv(cfg, minimal=True)
    assert "--dataset-path=-data" in argv and "--checkpoint-dir=--out" in argv
    assert from_argv(argv) == cfg


@pytest.mark.parametrize(("argv", "named"), [
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "-0.001"], "--lr"),
    (["--epochs", "10", "--stage1-epochs", "11"], "--stage1-epochs"),
    (["--img-size", "100"], "--img-size"),
    (["--backbone", "edgenext_huge_nonexistent"], "--backbone"),
    (["--amp", "fp8"], "--amp"),
    (["--batch-size", "two"], "--batch-size"),
    (["--no-such-flag"], "--no-such-flag"),
    (["--val-fraction", "1.0"], "--val-fraction"),
    (["--top-k", "9"], "--top-k"),
])
def test_bad_flags_exit_2_naming_the_flag(argv: list[str], named: str,
                                         capsys: pytest.CaptureFixture) -> None:
    # --dataset-path points nowhere: validation must fail before any data is read.
    assert main(["train", "--dataset-path", "/nonexistent", *argv]) == 2
    err = capsys.readouterr().err
    assert named in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_dataset_exits_2(tmp_path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--dataset-path", str(tmp_path / "nope"), "--no-pretrained",
                 "--backbone", "edgenext_xx_small"]) == 2
    assert "nope" in capsys.readouterr().err


def test_derived_values_are_not_fields() -> None:
    cfg = TrainConfig(batch_size=16, accumulation_steps=8, lr=1e-4, lr_scaling="sqrt",
                      lr_reference_batch=8, workers_per_trial=2, num_workers=7)
    assert cfg.effective_batch(1) == 16 * 8 * 2  # never num_workers
    assert math.isclose(cfg.resolved_lr(1), 1e-4 * math.sqrt(256 / 8))
    assert cfg.resolved_lr(2) == cfg.resolved_lr(1)
    linear = dataclasses.replace(cfg, lr_scaling="linear", stage2_lr=2e-4, stage2_batch_size=4)
    assert math.isclose(linear.resolved_lr(2), 2e-4 * (4 * 8 * 2) / 8)
    assert "effective_batch" not in FIELDS and "resolved_lr" not in FIELDS


def test_optimizer_steps_count_partial_batches_and_accumulation() -> None:
    cfg = TrainConfig(batch_size=4, accumulation_steps=3, epochs=3, stage1_epochs=1,
                      stage2_batch_size=2)
    assert cfg.micro_batches_per_epoch(10, 1) == 3      # 4 + 4 + 2
    assert cfg.optimizer_steps_per_epoch(10, 1) == 1
    assert cfg.micro_batches_per_epoch(10, 2) == 5
    assert cfg.optimizer_steps_per_epoch(10, 2) == 2    # 3 + a partial 2
    assert cfg.optimizer_steps(10) == 1 + 2 * 2


def test_yaml_round_trip_and_unknown_keys(tmp_path) -> None:
    from camotune.trainer.config import dump_yaml

    cfg = TrainConfig(lr=3e-4, use_ema=True, backbone="edgenext_xx_small")
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_yaml(str(path)) == cfg
    with pytest.raises(BadInput, match="bogus"):
        from_dict({"bogus": 1})
    path.write_text("lr: [1, 2\n")
    with pytest.raises(BadInput, match=r"c\.yaml"):
        load_yaml(str(path))
