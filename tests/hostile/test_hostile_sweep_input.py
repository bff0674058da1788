"""Hostile input to ``camotune sweep``, ``resume``, ``results``, ``export`` and ``confirm``:
each case is one stderr line and exit 2, within seconds, leaving no half-made sweep folder.
None of these cases starts Ray."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hostile_lib import camotune, error_line

SECONDS = 60.0  # a fresh interpreter importing torch on a loaded 2-core machine

SMALL = ["--backbone", "edgenext_xx_small", "--img-size", "32", "--epochs", "1",
         "--stage1-epochs", "1", "--num-workers", "0"]

# name -> (extra sweep arguments, fragment of the one-line message)
SWEEP_FLAGS = {
    "cpus-nan": (["--cpus-per-trial", "nan"], "--cpus-per-trial: must be a number > 0.0"),
    "cpus-inf": (["--cpus-per-trial", "inf"], "--cpus-per-trial: must be a number > 0.0"),
    "cpus-negative": (["--cpus-per-trial", "-1"], "--cpus-per-trial: must be a number > 0.0"),
    "gpus-nan": (["--gpus-per-trial", "nan"], "--gpus-per-trial: must be a number >= 0.0"),
    "tracking-scheme": (["--tracking-uri", "htp://127.0.0.1:5000"],
                        "unknown tracking URI scheme 'htp'"),
    "tracking-db-password": (["--tracking-uri", "postgresql://u:pw@127.0.0.1/db"],
                             "$MLFLOW_TRACKING_URI"),
    "num-samples-design": (["--num-samples", "3", "--space", "{design}"],
                           "a design runs all its trials"),
    "point-against-base": (["--num-experts", "2", "--points", "{points}"],
                           "points[0] with the base config"),
    "storage-is-a-file": (["--storage-path", "{file}"], "is a file, not a folder"),
    "storage-read-only": (["--storage-path", "{readonly}/runs"], "is not writable"),
}

DESIGN = """design:
  levels:
    lr: [1.0e-4, 1.0e-3]
    batch_size: [4, 8]
  repeats: 1
fixed:
  epochs: 1
  stage1_epochs: 1
sweep: {trial_scheduler: fifo, collapse_stopper: false}
"""
SPACE = """params:
  top_k: {type: choice, values: [1, 3]}
  lr: {type: loguniform, low: 1.0e-4, high: 1.0e-3}
"""


def _fill(args: list[str], tmp_path: Path) -> list[str]:
    (tmp_path / "design.yaml").write_text(DESIGN)
    (tmp_path / "points.yaml").write_text("- {top_k: 3, lr: 0.0005}\n")
    (tmp_path / "a-file").write_text("x")
    readonly = tmp_path / "readonly"
    readonly.mkdir(exist_ok=True)
    readonly.chmod(0o555)
    names = {"design": tmp_path / "design.yaml", "points": tmp_path / "points.yaml",
             "file": tmp_path / "a-file", "readonly": readonly}
    return [a.format(**{k: str(v) for k, v in names.items()}) for a in args]


@pytest.mark.parametrize("name", list(SWEEP_FLAGS))
def test_hostile_sweep_flags_exit_2_before_anything_is_made(name: str, tmp_path: Path,
                                                            tiny_dataset: Path) -> None:
    if name == "storage-read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    extra, fragment = SWEEP_FLAGS[name]
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    runs = tmp_path / "runs"
    args = ["sweep", "--space", str(space), "--dataset-path", str(tiny_dataset),
            "--storage-path", str(runs), "--name", "s", *SMALL, "--no-pretrained", *_fill(extra, tmp_path)]
    t0 = time.monotonic()
    out = camotune(*args, cwd=tmp_path, timeout=SECONDS)
    assert out.returncode == 2, out.stderr[-2000:]
    assert fragment in error_line(out.stderr)
    assert time.monotonic() - t0 < SECONDS
    assert not (runs / "s").exists()  # no half-made folder
    assert "pw@" not in out.stderr  # the password is not echoed


def _sweep_folder(root: Path) -> Path:
    """A sweep folder as `camotune sweep` writes it, without running one: sweep.yaml and a
    trials.jsonl with one finished trial."""
    from camotune.search.settings import SweepSettings, write_settings
    from camotune.spaces import load_space
    from camotune.trainer.config import TrainConfig

    space = load_space("smoke")
    settings = SweepSettings(name="s", storage_path=str(root), space=space,
                             space_source="smoke", base=TrainConfig(dataset_path=str(root)))
    settings.sweep_dir.mkdir(parents=True)
    write_settings(settings)
    lines = [{"event": "start", "trial_id": "t1", "params": {"lr": 0.001}, "config": {},
              "trial_dir": "trials/t1"},
             {"event": "end", "trial_id": "t1", "stop_reason": "completed", "epochs": 1,
              "best_val_iou": 0.5, "last_val_iou": 0.5}]
    (settings.sweep_dir / "trials.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    return settings.sweep_dir


def _binary(folder: Path) -> None:
    (folder / "sweep.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)))


def _latin1(folder: Path) -> None:
    text = (folder / "sweep.yaml").read_text()
    (folder / "sweep.yaml").write_bytes(("# caf\xe9\n" + text).encode("latin-1"))


def _edit(change):
    def apply(folder: Path) -> None:
        import yaml

        data = yaml.safe_load((folder / "sweep.yaml").read_text())
        change(data)
        (folder / "sweep.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return apply


SWEEP_FILES = {
    "binary": (_binary, "not a text file"),
    "latin-1": (_latin1, "UTF-8 expected"),
    "collapse-unknown-key": (_edit(lambda d: d["collapse"].update(bogus=1)),
                             "collapse: unknown keys bogus"),
    "missing-name": (_edit(lambda d: d.pop("name")), "missing keys name"),
    "list-name": (_edit(lambda d: d.update(name=["a"])), "name: a string is required"),
}


@pytest.mark.parametrize("command", ["results", "resume", "export", "confirm"])
@pytest.mark.parametrize("name", list(SWEEP_FILES))
def test_hostile_sweep_yaml_is_one_line(name: str, command: str, tmp_path: Path) -> None:
    folder = _sweep_folder(tmp_path / "runs")
    change, fragment = SWEEP_FILES[name]
    change(folder)
    out = camotune(command, str(folder), cwd=tmp_path, timeout=SECONDS)
    if command in ("results", "export") and name not in ("binary", "latin-1"):
        # these read sweep.yaml as a plain mapping: the bad key does not matter to them
        assert out.returncode in (0, 2), out.stderr[-2000:]
        assert "Traceback" not in out.stderr
        return
    assert out.returncode == 2, out.stderr[-2000:]
    assert fragment in error_line(out.stderr)


TRIAL_LINES = {
    "binary-bytes": b"\xff\xfe\x00garbage\x89\n",
    "list-trial-id": json.dumps({"event": "epoch", "trial_id": ["t1"], "epoch": 1,
                                 "metrics": {}}).encode() + b"\n",
    "dict-trial-id": json.dumps({"event": "end", "trial_id": {"a": 1},
                                 "stop_reason": "completed"}).encode() + b"\n",
}


@pytest.mark.parametrize("name", list(TRIAL_LINES))
def test_hostile_trials_jsonl_line_is_skipped_with_a_warning(name: str, tmp_path: Path) -> None:
    folder = _sweep_folder(tmp_path / "runs")
    with (folder / "trials.jsonl").open("ab") as fh:
        fh.write(TRIAL_LINES[name])
    out = camotune("results", str(folder), cwd=tmp_path, timeout=SECONDS)
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.returncode == 0, out.stderr[-2000:]
    assert "skipped" in out.stderr
    assert "t1" in out.stdout
