"""Hostile paths: folders that are files or cannot be written, missing files, names that begin
with ``-``, and ``--tracking-uri none``. Each bad one is exit 2 with one line before training."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hostile_lib import one_line

from camotune.cli import main
from camotune.trainer.config import TrainConfig, from_argv, load_yaml

TINY = ["--backbone", "edgenext_xx_small", "--no-pretrained", "--img-size", "32",
        "--epochs", "1", "--stage1-epochs", "1", "--batch-size", "4",
        "--accumulation-steps", "1", "--num-workers", "0", "--threads", "1"]


def _read_only_folder(tmp: Path) -> Path:
    if os.geteuid() != 0:
        folder = tmp / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if os.access("/sys", os.W_OK) and Path("/sys").stat().st_mode & 0o200:
        pytest.skip("no read-only folder for root here")
    return Path("/sys")  # read-only even for root


def _case(kind: str, tmp: Path) -> tuple[list[str], str]:
    """(argv after `camotune`, a fragment of the one-line error) for each hostile path."""
    a_file = tmp / "a-file"
    a_file.write_text("not a folder")
    return {
        "checkpoint-dir-is-a-file": (["train", "--checkpoint-dir", str(a_file)], "is a file"),
        "checkpoint-dir-under-a-file": (["train", "--checkpoint-dir", str(a_file / "run")],
                                        "not writable"),
        "checkpoint-dir-read-only": (["train", "--checkpoint-dir",
                                      str(_read_only_folder(tmp) / "run")], "not writable")
        if os.geteuid() == 0 else
        (["train", "--checkpoint-dir", str(_read_only_folder(tmp))], "not writable"),
        "resume-from-missing": (["train", "--resume-from", str(tmp / "no.pt")], "not found"),
        "resume-from-a-folder": (["train", "--resume-from", str(tmp)], "not found"),
        "pretrained-path-missing": (["train", "--checkpoint-dir", str(tmp / "r"),
                                     "--pretrained-path", str(tmp / "w.pth")], "not found"),
        "evaluate-checkpoint-a-folder": (["evaluate", "--checkpoint", str(tmp),
                                          "--dataset-path", str(tmp)], "--checkpoint"),
        "space-is-a-folder": (["sweep", "--space", str(tmp) + "/", "--dataset-path", str(tmp),
                               "--storage-path", str(tmp / "runs")], "cannot read"),
        "space-missing": (["sweep", "--space", str(tmp / "nope.yaml"), "--dataset-path",
                           str(tmp), "--storage-path", str(tmp / "runs")], "cannot read"),
    }[kind]


KINDS = ["checkpoint-dir-is-a-file", "checkpoint-dir-under-a-file", "checkpoint-dir-read-only",
         "resume-from-missing", "resume-from-a-folder", "pretrained-path-missing",
         "evaluate-checkpoint-a-folder", "space-is-a-folder", "space-missing"]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_path_exits_2_in_one_line_before_training(kind: str, tmp_path: Path,
                                                      tiny_dataset: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    argv, fragment = _case(kind, tmp_path)
    if argv[0] == "train":
        argv = [*argv, "--dataset-path", str(tiny_dataset), *TINY]
    assert main(argv) == 2
    assert fragment in one_line(capsys.readouterr().err)
    assert not list(tmp_path.rglob("last.pt"))


@pytest.mark.slow
def test_command_txt_reruns_paths_that_begin_with_a_dash(tmp_path: Path,
                                                         tiny_dataset: Path) -> None:
    from camotune.trainer.loop import train_command

    (tmp_path / "-data").symlink_to(tiny_dataset)
    cfg = from_argv(["--dataset-path=-data", "--checkpoint-dir=-out", *TINY, "--seed", "3"])
    command = train_command(cfg)
    assert from_argv(shlex.split(command)[2:]) == cfg
    env_db = tmp_path / "env.db"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{env_db}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # As a user would: the line of command.txt through the shell, asking for no MLflow.
    result = subprocess.run(["bash", "-c", command + " --tracking-uri none"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "-out"
    assert (out / "last.pt").is_file()
    assert (out / "command.txt").read_text().strip() == command
    assert load_yaml(str(out / "config.yaml")) == cfg
    assert isinstance(cfg, TrainConfig) and cfg.dataset_path == "-data"
    # --tracking-uri none: no MLflow at all (not a folder named "none", not the env's store).
    assert not (tmp_path / "none").exists() and not env_db.exists()
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(("flag", "env", "expected"), [
    ("none", "", None), ("None", "sqlite:///x.db", None), (None, "none", None), (None, "", None),
    ("sqlite:///a.db", "sqlite:///b.db", "sqlite:///a.db"), (None, "sqlite:///b.db",
                                                             "sqlite:///b.db"),
])
def test_tracking_uri_none_means_no_mlflow(flag: str | None, env: str, expected: str | None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from camotune.trainer.commands import _tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    assert _tracking_uri(flag) == expected
