"""``--checkpoint-every 2`` in a sweep: the driver killed while last.pt holds an earlier epoch
than the last one reported; the resumed trial replays from last.pt and ends with the history
of an uninterrupted run. And the pointer a report hands Tune names the epoch last.pt holds."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from camotune.search.trainable import checkpoint_epochs, last_checkpoint_epoch
from camotune.sweepdir.events import read_events
from camotune.trainer.checkpoint import load
from camotune.trainer.config import TrainConfig, load_yaml
from camotune.trainer.history import read_history

SPACE = {
    "description": "one trial of 5 epochs, last.pt every 2",
    "params": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
    "fixed": {"img_size": 64, "backbone": "edgenext_xx_small", "pretrained": False,
              "epochs": 5, "stage1_epochs": 1, "num_workers": 0, "full_metrics_every": 5,
              "checkpoint_every": 2, "batch_size": 4, "accumulation_steps": 1},
    "points": [{"lr": 3e-3}],
    "sweep": {"trial_scheduler": "fifo", "collapse_stopper": False, "num_samples": 1},
}


class _Settings:
    rung_epochs = (3, 9)


def test_the_pointer_names_the_epoch_last_pt_holds() -> None:
    cfg = TrainConfig(epochs=9, stage1_epochs=1, checkpoint_every=4)
    ms = checkpoint_epochs(_Settings(), cfg)
    assert ms == {3, 9}
    # last.pt at 1 (end of stage 1), 3 (a rung), 4, 8 (every 4) and 9 (the last epoch)
    assert [last_checkpoint_epoch(cfg, e, ms) for e in range(1, 10)] == \
        [1, 1, 3, 4, 4, 4, 4, 8, 9]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Ray saves its state every second here, so that it knows the trial when it is killed.
    env.update(HF_HUB_OFFLINE="1", TQDM_DISABLE="1", CAMOTUNE_CACHE=str(tmp_path / "cache"),
               TUNE_GLOBAL_CHECKPOINT_S="1")
    return env


def _epochs(path: Path) -> list[int]:
    return [e["epoch"] for e in read_events(path) if e["event"] == "epoch"]


@pytest.mark.slow
def test_killed_after_an_odd_epoch_resumes_to_the_uninterrupted_history(
        tmp_path: Path) -> None:
    from camotune.trainer.loop import fit
    from camotune.trainer.synth import synth

    data = synth(tmp_path / "data", n_train=100, n_test=4, size=64, seed=3)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    sweep_dir = tmp_path / "runs" / "k2"
    cmd = [sys.executable, "-m", "camotune", "sweep", "--space", str(space), "--dataset-path",
           str(data), "--storage-path", str(tmp_path / "runs"), "--name", "k2",
           "--keep-checkpoints", "all"]
    log = (tmp_path / "sweep.log").open("w")
    proc = subprocess.Popen(cmd, env=_env(tmp_path), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while 3 not in _epochs(sweep_dir / "trials.jsonl") if (
                sweep_dir / "trials.jsonl").exists() else True:
            assert proc.poll() is None, (tmp_path / "sweep.log").read_text()[-2000:]
            assert time.time() < deadline, "epoch 3 never came"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    (trial_dir,) = (sweep_dir / "trials").iterdir()
    held = load(trial_dir / "last.pt")["epoch"]
    reported = max(_epochs(sweep_dir / "trials.jsonl"))
    assert held in (2, 4) and held <= reported

    resumed = subprocess.run([sys.executable, "-m", "camotune", "resume", str(sweep_dir)],
                             env=_env(tmp_path), capture_output=True, text=True, timeout=400,
                             start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = read_events(sweep_dir / "trials.jsonl")
    assert _epochs(sweep_dir / "trials.jsonl") == [1, 2, 3, 4, 5]  # replays not recorded twice
    (end,) = [e for e in events if e["event"] == "end"]
    assert end["stop_reason"] == "completed" and end["epochs"] == 5
    assert any(e["event"] == "start" and e.get("restored") for e in events)

    cfg = load_yaml(str(trial_dir / "config.yaml"))
    straight = fit(dataclasses.replace(cfg, checkpoint_dir=str(tmp_path / "straight"),
                                       resume_from=""))
    history = read_history(trial_dir / "history.csv")
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    for a, b in zip(straight.history, history, strict=True):
        for key in set(a) - {"epoch_time_s", "imgs_per_s"}:
            x, y = a[key], b[key]
            if isinstance(x, float):
                assert math.isclose(x, y, abs_tol=1e-6), key
            else:
                assert x == y, key
