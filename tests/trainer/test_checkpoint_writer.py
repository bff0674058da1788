"""Checkpoints written in a background thread: CPU copies taken at submit, atomic files, one
write at a time, errors raised on the caller's thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from camotune.trainer.checkpoint_writer import CheckpointWriter, cpu_copy


def test_the_file_holds_the_state_as_it_was_at_submit(tmp_path: Path) -> None:
    weights = torch.zeros(1000)
    moments = {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"params": [0]}]}
    writer = CheckpointWriter()
    writer.submit({"model": {"w": weights}, "optimizer": moments, "epoch": 1},
                  last=tmp_path / "last.pt", best=tmp_path / "best.pt")
    weights += 5  # training goes on at once
    moments["state"][0]["exp_avg"].mul_(0)
    writer.close()
    for name in ("last.pt", "best.pt"):
        state = torch.load(tmp_path / name, weights_only=False)
        assert torch.equal(state["model"]["w"], torch.zeros(1000)), name
        assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], torch.ones(3)), name
        assert state["epoch"] == 1
    assert not list(tmp_path.glob(".*tmp*"))  # only the renamed files remain


def test_best_alone_is_a_file_of_its_own(tmp_path: Path) -> None:
    writer = CheckpointWriter()
    writer.submit({"epoch": 1}, last=tmp_path / "last.pt")
    writer.submit({"epoch": 2}, best=tmp_path / "best.pt")
    writer.close()
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 1
    assert torch.load(tmp_path / "best.pt", weights_only=False)["epoch"] == 2


def test_a_failed_write_is_raised_by_the_next_submit_and_by_close(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder" / "last.pt"
    writer = CheckpointWriter()
    writer.submit({"epoch": 1}, last=missing)
    with pytest.raises(RuntimeError, match="does not exist"):  # torch.save's own error
        writer.submit({"epoch": 2}, last=tmp_path / "last.pt")
    writer.submit({"epoch": 3}, last=missing)
    with pytest.raises(RuntimeError, match="does not exist"):  # torch.save's own error
        writer.close()
    quiet = CheckpointWriter()
    quiet.submit({"epoch": 1}, last=missing)
    quiet.close(quiet=True)  # logged: the run is already failing with its own error


def test_cpu_copy_copies_tensors_and_keeps_other_values() -> None:
    t = torch.arange(3)
    state = {"a": [t, (t, "x")], "n": 4, "s": "raw"}
    copied = cpu_copy(state)
    assert copied["a"][0] is not t and torch.equal(copied["a"][0], t)
    assert copied["a"][1][1] == "x" and copied["n"] == 4 and copied["s"] == "raw"
