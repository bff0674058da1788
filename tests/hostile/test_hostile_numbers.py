"""Hostile numbers: NaN, infinities and absurd magnitudes in training flags and space bounds are
refused up front with one line naming the flag (exit 2), before any data is read."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_lib import one_line

from camotune.cli import main
from camotune.errors import BadInput
from camotune.spaces import Space
from camotune.trainer.config import LIMITS

FLAGS = [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "-inf"), ("--lr", "1e300"), ("--lr", "0"),
    ("--stage2-lr", "nan"), ("--min-lr", "1e308"), ("--weight-decay", "nan"),
    ("--weight-decay", "-1"), ("--ema-decay", "nan"), ("--ema-decay", "1"),
    ("--grad-clip", "inf"), ("--deep-supervision-weight", "inf"), ("--bce-weight", "1e30"),
    ("--backbone-lr-scale", "nan"), ("--val-fraction", "nan"), ("--aug-strength", "inf"),
    ("--batch-size", "1000000000000"), ("--stage2-batch-size", "100000"),
    ("--accumulation-steps", "0"), ("--img-size", "3200000"), ("--img-size", "4128"),
    ("--epochs", "1000000000"), ("--warmup-steps", "1000000000000"),
    ("--num-experts", "100000"), ("--seed", str(2**40)), ("--threads", "1000000000"),
    ("--num-workers", "-1"), ("--workers-per-trial", "1000000"),
    ("--full-metrics-every", "0"), ("--lr-reference-batch", "1e12"), ("--batch-size", "nan"),
]


@pytest.mark.parametrize(("name", "value"), FLAGS)
def test_bad_number_exits_2_naming_the_flag(name: str, value: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    # The dataset does not exist: a number must be refused before any path is looked at.
    argv = ["train", "--dataset-path", str(tmp_path / "none"), f"{name}={value}"]
    assert main(argv) == 2
    assert name in one_line(capsys.readouterr().err)


SPACE_BOUNDS = [
    ("lr", {"type": "loguniform", "low": 1e-5, "high": 1e300}),
    ("lr", {"type": "uniform", "low": float("nan"), "high": 1e-3}),
    ("lr", {"type": "uniform", "low": 1e-5, "high": float("inf")}),
    ("weight_decay", {"type": "uniform", "low": -1e300, "high": 0.1}),
    ("batch_size", {"type": "choice", "values": [2, 10**12]}),
    ("batch_size", {"type": "int", "low": 1, "high": 10**12}),
    ("img_size", {"type": "int", "low": 32, "high": 3_200_000}),
    ("img_size", {"type": "choice", "values": [64, 3_200_000]}),
    ("ema_decay", {"type": "choice", "values": [0.99, float("nan")]}),
    ("warmup_steps", {"type": "int", "low": 0, "high": 2**80}),
    ("grad_clip", {"type": "loguniform", "low": 1e-3, "high": 1e308}),
]


@pytest.mark.parametrize(("name", "spec"), SPACE_BOUNDS)
def test_bad_space_bound_names_the_param(name: str, spec: dict) -> None:
    with pytest.raises(BadInput, match=rf"^s\.yaml: params\.{name}: ") as exc:
        Space.from_dict({"params": {name: spec}}, source="s.yaml", name="s")
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 300


def test_every_bound_admits_the_defaults_and_is_finite() -> None:
    from camotune.trainer.config import DEFAULTS

    for name, (low, high) in LIMITS.items():
        assert low <= getattr(DEFAULTS, name) <= high, name
        assert high < float("inf")
