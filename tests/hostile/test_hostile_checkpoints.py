"""Hostile checkpoints: a crafted ``.pt`` must never run code; every bad file is exit 2 with
one line naming it. A full disk during a checkpoint write leaves no temporary file behind."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_lib import one_line

from camotune.cli import main
from camotune.errors import JobFailed
from camotune.trainer import checkpoint as ckpt
from camotune.trainer.config import DEFAULTS, to_dict


class _RunsCode:
    """Unpickling this calls ``os.system``: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_torch(path: Path, marker: Path) -> None:
    torch.save({"format": 2, "config": to_dict(DEFAULTS), "model": _RunsCode(marker)}, path)


def _crafted_plain_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"config": {}, "model": _RunsCode(marker)}))


def _format_1(path: Path, marker: Path) -> None:
    # What camotune wrote before format 2: NumPy's RNG state tuple (an ndarray inside).
    torch.save({"format": 1, "config": to_dict(DEFAULTS), "model": {},
                "rng": {"numpy": np.random.get_state()}}, path)


def _garbage(path: Path, marker: Path) -> None:
    path.write_bytes(os.urandom(512))


def _truncated(path: Path, marker: Path) -> None:
    torch.save({"config": to_dict(DEFAULTS), "model": {"w": torch.zeros(64)}}, path)
    path.write_bytes(path.read_bytes()[:100])


def _not_a_checkpoint(path: Path, marker: Path) -> None:
    torch.save([torch.zeros(2)], path)


FILES = {
    "crafted-torch-save": _crafted_torch,
    "crafted-plain-pickle": _crafted_plain_pickle,
    "format-1": _format_1,
    "random-bytes": _garbage,
    "truncated": _truncated,
    "a-list": _not_a_checkpoint,
}


def test_the_crafted_files_do_run_code_when_unpickled_unsafely(tmp_path: Path) -> None:
    # Proves the corpus is hostile: torch.load without weights_only runs the payload.
    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    _crafted_torch(path, marker)
    code = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("command", ["evaluate", "train"])
@pytest.mark.parametrize("kind", list(FILES))
def test_bad_checkpoint_exits_2_with_one_line_and_runs_nothing(
        kind: str, command: str, tmp_path: Path, tiny_dataset: Path,
        capsys: pytest.CaptureFixture) -> None:
    path, marker = tmp_path / f"{kind}.pt", tmp_path / "ran"
    FILES[kind](path, marker)
    if command == "evaluate":
        argv = ["evaluate", "--checkpoint", str(path), "--dataset-path", str(tiny_dataset)]
    else:
        argv = ["train", "--resume-from", str(path), "--num-workers", "0"]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert str(path) in line
    assert not marker.exists()


def test_disk_full_mid_write_removes_the_temporary_file(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.pt"
    ckpt.save_atomic({"w": torch.zeros(4)}, target)  # a previous, whole last.pt

    def full_disk(obj, f, *a, **kw):  # fault injection: half a file, then ENOSPC
        Path(f).write_bytes(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(JobFailed, match="disk full") as exc:
        ckpt.save_atomic({"w": torch.ones(4)}, target)
    assert exc.value.reason == "disk_full"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.zeros(4))


def test_disk_full_during_training_is_exit_1_in_one_line(
        tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    def full_disk(obj, f, *a, **kw):
        Path(f).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    out = tmp_path / "run"
    code = main(["train", "--dataset-path", str(tiny_dataset), "--checkpoint-dir", str(out),
                 "--backbone", "edgenext_xx_small", "--no-pretrained", "--img-size", "32",
                 "--epochs", "1", "--stage1-epochs", "1", "--batch-size", "4",
                 "--accumulation-steps", "1", "--num-workers", "0", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "disk full" in err and "Traceback" not in err
    assert not list(out.glob(".*.tmp.*"))


def test_a_written_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    # pysodmetrics hands back NumPy scalars; a checkpoint holding them would not load.
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    state = ckpt.make_state(
        cfg=DEFAULTS, model=model, ema=None, optimizer=optimizer,
        schedule=torch.optim.lr_scheduler.StepLR(optimizer, 1), scaler=None, epoch=1, stage=1,
        unfreeze_level=0, best_val_iou=np.float64(0.25), best_weights="raw",
        metrics={"S_alpha": np.float64(0.5), "epoch": np.int64(3), "val_iou": 0.25})
    ckpt.save_atomic(state, tmp_path / "last.pt")
    loaded = ckpt.load(tmp_path / "last.pt")
    assert loaded["metrics"] == {"S_alpha": 0.5, "epoch": 3, "val_iou": 0.25}
    before = (np.random.random(), torch.rand(1))
    ckpt.set_rng_state(loaded["rng"])
    assert (np.random.random(), torch.rand(1)) == before
