"""Faults around a real sweep: a second command on a locked folder, a stale lock, Ctrl-C,
a resumed copy of a sweep folder, a secret in the tracking URI, an invalid sampled trial,
the sockets a local Ray listens on, and a GPU request on a machine without one."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camotune.errors import BadInput
from camotune.sweepdir.events import read_events
from camotune.sweepdir.lock import HOLDER_FILE, locked

_spec = importlib.util.spec_from_file_location(
    "tracking_server", Path(__file__).parents[1] / "tracking" / "conftest.py")
_server = importlib.util.module_from_spec(_spec)
sys.modules["tracking_server"] = _server  # dataclasses look their module up by name
_spec.loader.exec_module(_server)
mlflow_server = _server.mlflow_server

SECRET = "s3cret"
LOOPBACK = ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]")
SPACE = """params:
  top_k: {type: choice, values: [1, 3]}
  lr: {type: loguniform, low: 1.0e-4, high: 1.0e-3}
fixed:
  img_size: 32
  backbone: edgenext_xx_small
  pretrained: false
  epochs: 2
  stage1_epochs: 1
  num_workers: 0
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update(HF_HUB_OFFLINE="1", TQDM_DISABLE="1", RAY_DEDUP_LOGS="0",
               CAMOTUNE_CACHE=str(tmp_path / "cache"))
    return env


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "camotune", *args]


# -- the lock, in one process and across processes ------------------------------------------

def test_a_held_lock_names_its_holder_and_a_dead_holder_is_taken_over(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "sweep"
    folder.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from camotune.sweepdir.lock import locked\n"
         f"with locked({str(folder)!r}, 'resume'):\n print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(BadInput) as exc, locked(folder, "sync"):
            pass
        assert time.monotonic() - t0 < 2
        message = str(exc.value)
        assert f"pid {holder.pid}" in message and "camotune resume" in message
        assert socket.gethostname() in message and "since" in message
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL left the holder file behind; the OS lock went with the process.
    assert json.loads((folder / HOLDER_FILE).read_text())["pid"] == holder.pid
    with caplog.at_level(logging.WARNING), locked(folder, "confirm"):
        assert json.loads((folder / HOLDER_FILE).read_text())["pid"] == os.getpid()
    assert "taking over the lock" in caplog.text and str(holder.pid) in caplog.text
    assert not (folder / HOLDER_FILE).exists()


# -- a real sweep ------------------------------------------------------------------------------

def _listening(session: int) -> list[str]:
    """Local addresses of the TCP sockets listened on by processes of ``session``."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        for pid in map(int, re.findall(r"pid=(\d+)", line)):
            try:
                if os.getsid(pid) == session:
                    found.append(line.split()[3])
                    break
            except OSError:
                continue
    return found


def _snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns,
                                         hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _wait(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert proc.poll() is None, f"ended before {what}"
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _stop_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_interrupted_sweep_copied_resumed_without_touching_the_original(
        tmp_path: Path, tiny_dataset: Path, mlflow_server) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    runs = tmp_path / "runs"
    uri = f"http://user:{SECRET}@127.0.0.1:{mlflow_server.port}"
    log = (tmp_path / "sweep.log").open("w")
    proc = subprocess.Popen(_command(
        "sweep", "--space", str(space), "--dataset-path", str(tiny_dataset), "--storage-path",
        str(runs), "--name", "k", "--num-experts", "2", "--searcher", "random",
        "--num-samples", "6", "--max-concurrent", "1", "--trial-scheduler", "fifo",
        "--tracking-uri", uri, "--experiment", "safety", "--keep-checkpoints", "all"),
        env=_env(tmp_path), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    sweep_dir = runs / "k"
    events = sweep_dir / "trials.jsonl"
    try:
        _wait(lambda: any(e["event"] == "epoch" for e in read_events(events)), proc, 400,
              "the first epoch")
        sockets = _listening(proc.pid)  # Ray's processes are in the driver's session
        _wait(lambda: len([e for e in read_events(events) if e["event"] == "end"]) >= 2,
              proc, 400, "two ended trials")
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=120) == 130
    finally:
        _stop_group(proc)
    out = (tmp_path / "sweep.log").read_text()
    assert f"camotune resume {sweep_dir}" in out, out[-3000:]
    assert "failed (error)" not in out
    assert sockets and all(s.rsplit(":", 1)[0] in LOOPBACK for s in sockets), sockets

    # the lock: a second command on the folder while one runs
    copy = tmp_path / "elsewhere" / "k-copy"
    copy.parent.mkdir()
    shutil.copytree(sweep_dir, copy)
    original = _snapshot(runs)
    resume = subprocess.Popen(_command("resume", str(copy)), env=_env(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        _wait(lambda: (copy / HOLDER_FILE).exists(), resume, 120, "the lock")
        t0 = time.monotonic()
        second = subprocess.run(_command("resume", str(copy)), env=_env(tmp_path),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"pid {resume.pid}" in second.stderr and "camotune resume" in second.stderr
        assert time.monotonic() - t0 < 60
        rest = resume.communicate(timeout=600)[0]
        assert resume.returncode == 0, rest[-3000:]
    finally:
        _stop_group(resume)

    # the copy completed; the original (and its storage folder) is untouched
    assert _snapshot(runs) == original
    ended = [e for e in read_events(copy / "trials.jsonl") if e["event"] == "end"]
    assert len({e["trial_id"] for e in ended}) == 6
    reasons = {e["stop_reason"] for e in ended}
    assert reasons <= {"completed", "error"}, reasons
    for e in ended:
        if e["stop_reason"] == "error":
            assert "--top-k must be <= --num-experts" in e["message"], e["message"]
    # the invalid combination failed its own trial only (the sweep started both kinds)
    starts = [e for e in read_events(copy / "trials.jsonl") if e["event"] == "start"]
    assert {int(e["params"]["top_k"]) for e in starts} == {1, 3}
    assert "completed" in reasons and "error" in reasons
    # the trials created after the resume have their folders in the copy
    assert len(list(copy.glob("ray_*"))) == len(list(copy.glob("trials/*"))) == 6

    # no secret anywhere in either folder, binary files included
    for folder in (runs, copy):
        for path in folder.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
    # no parent run left RUNNING
    client = mlflow_server.client()
    experiment = client.get_experiment_by_name("safety")
    parents = [r for r in client.search_runs([experiment.experiment_id])
               if r.data.tags.get("camotune.kind") == "sweep"]
    assert parents and all(r.info.status != "RUNNING" for r in parents)


@pytest.mark.slow
def test_a_gpu_trial_on_a_local_ray_without_gpu_exits_2_at_once(tmp_path: Path,
                                                              tiny_dataset: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    t0 = time.monotonic()
    out = subprocess.run(_command(
        "sweep", "--space", str(space), "--dataset-path", str(tiny_dataset), "--storage-path",
        str(tmp_path / "runs"), "--name", "g", "--gpus-per-trial", "1", "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}"), env=_env(tmp_path), capture_output=True, text=True,
        timeout=300, start_new_session=True)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "--gpus-per-trial" in out.stderr and "--wait-for-resources" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - t0 < 120
    assert not (tmp_path / "runs" / "g").exists()
