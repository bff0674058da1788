"""The sweep driver killed mid-sweep (SIGKILL to its process group), then `camotune resume`."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camotune.sweepdir.events import read_events
from camotune.trainer.history import read_history

NUM_SAMPLES = 5


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TQDM_DISABLE="1", RAY_DEDUP_LOGS="0",
               CAMOTUNE_CACHE=str(tmp_path / "cache"))
    return env


def _wait_for_mid_sweep(path: Path, proc: subprocess.Popen, timeout: float) -> None:
    """Until one trial has ended and another has finished an epoch without ending."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        events = read_events(path)
        ended = {e["trial_id"] for e in events if e["event"] == "end"}
        busy = {e["trial_id"] for e in events if e["event"] == "epoch"} - ended
        if ended and busy:
            return
        time.sleep(0.5)
    raise AssertionError("the sweep did not reach the middle in time")


@pytest.mark.slow
def test_killed_driver_resumes_to_the_full_trial_count(tmp_path: Path) -> None:
    from camotune.trainer.synth import synth

    data = synth(tmp_path / "data", n_train=100, n_test=4, size=64, seed=2)
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "camotune", "sweep", "--space", "smoke", "--dataset-path",
           str(data), "--storage-path", str(runs), "--name", "k", "--num-samples",
           str(NUM_SAMPLES), "--max-concurrent", "2", "--keep-checkpoints", "all"]
    log = (tmp_path / "sweep.log").open("w")
    proc = subprocess.Popen(cmd, env=_env(tmp_path), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    sweep_dir = runs / "k"
    try:
        _wait_for_mid_sweep(sweep_dir / "trials.jsonl", proc, timeout=400)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
        proc.wait(timeout=60)
    before = read_events(sweep_dir / "trials.jsonl")
    ended_before = {e["trial_id"] for e in before if e["event"] == "end"}

    resumed = subprocess.run([sys.executable, "-m", "camotune", "resume", str(sweep_dir)],
                             env=_env(tmp_path), capture_output=True, text=True, timeout=600,
                             start_new_session=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    events = read_events(sweep_dir / "trials.jsonl")
    orphans = {e["trial_id"] for e in events if e["event"] == "orphaned"}
    end_counts = collections.Counter(e["trial_id"] for e in events if e["event"] == "end")
    assert all(n == 1 for n in end_counts.values()), end_counts
    assert len(set(end_counts) - orphans) == NUM_SAMPLES
    after_kill = events[len(before):]
    rerun = {e["trial_id"] for e in after_kill if e["event"] == "epoch"} & ended_before
    assert not rerun, f"finished trials trained again: {rerun}"
    epoch_counts = collections.Counter((e["trial_id"], e["epoch"]) for e in events
                                       if e["event"] == "epoch")
    assert max(epoch_counts.values()) == 1  # no epoch of any trial recorded twice
    for tid in end_counts:
        epochs = [int(r["epoch"]) for r in read_history(sweep_dir / "trials" / tid /
                                                        "history.csv")]
        assert epochs == list(range(1, len(epochs) + 1)), (tid, epochs)  # no epoch twice
    restored = [e for e in events if e["event"] == "start" and e.get("restored")]
    assert restored or orphans, "the interrupted trial was neither restored nor orphaned"
