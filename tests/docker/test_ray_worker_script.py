"""docker/ray-worker.sh, run with stand-ins for `ray` and `nvidia-smi` on PATH.

The stand-in `ray` prints its arguments and CUDA_VISIBLE_DEVICES, then sleeps, so the worker's
GPU locks stay held the way `ray start --block` holds them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_files import DOCKER

SCRIPT = DOCKER / "ray-worker.sh"

pytestmark = pytest.mark.skipif(
    not (shutil.which("bash") and shutil.which("flock")), reason="needs bash and flock"
)

FAKE_RAY = """#!/usr/bin/env bash
echo "ARGS $* CUDA=${CUDA_VISIBLE_DEVICES-unset}"
exec sleep 60
"""


@pytest.fixture
def host(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment of a fake host with two GPUs; stops every worker it started."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ray").write_text(FAKE_RAY)
    (bin_dir / "nvidia-smi").write_text(
        '#!/bin/sh\nfor i in $(seq 0 $((FAKE_GPUS - 1))); do echo "GPU $i: Fake (UUID: GPU-$i)"; done\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_GPUS": "2",
        "GPU_LOCK_DIR": str(tmp_path / "locks"),
    }
    yield env
    for proc in _started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _started.clear()


_started: list[subprocess.Popen[str]] = []


def start(env: dict[str, str], *args: str, **extra: str) -> tuple[subprocess.Popen[str], str]:
    """Start the worker script; return it with its first line of output (or its error)."""
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), *args], env={**env, **extra}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    _started.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:  # the script exited without exec'ing ray
        proc.wait(timeout=10)
        assert proc.stderr is not None
        line = proc.stderr.read().strip()
    return proc, line


def test_without_gpus_per_worker_the_node_takes_every_gpu(host: dict[str, str]) -> None:
    _, line = start(host)
    assert line == "ARGS start --address ray-head:6379 --block CUDA=unset"


def test_head_address_cpus_and_extra_arguments_are_passed(host: dict[str, str]) -> None:
    _, line = start(host, "--node-ip-address=10.0.0.2", RAY_HEAD_ADDRESS="10.0.0.1:6379", RAY_WORKER_CPUS="6")
    assert line == "ARGS start --address 10.0.0.1:6379 --block --num-cpus 6 --node-ip-address=10.0.0.2 CUDA=unset"


def test_replicas_claim_distinct_gpus_until_none_is_left(host: dict[str, str]) -> None:
    lines = {start(host, GPUS_PER_WORKER="1")[1] for _ in range(2)}
    assert lines == {
        f"ARGS start --address ray-head:6379 --block --num-gpus 1 CUDA={i}" for i in (0, 1)
    }
    third, message = start(host, GPUS_PER_WORKER="1")
    assert third.returncode == 2
    assert message == (
        "camotune-ray-worker: GPUS_PER_WORKER=1 but only 0 of 2 GPUs are free on this host; "
        "lower --scale ray-worker or GPUS_PER_WORKER"
    )


def test_a_stopped_worker_releases_its_gpus(host: dict[str, str]) -> None:
    first, line = start(host, GPUS_PER_WORKER="2")
    assert line.endswith("--num-gpus 2 CUDA=0,1")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    _, line = start(host, GPUS_PER_WORKER="1")
    assert line.endswith("--num-gpus 1 CUDA=0")


def test_zero_gpus_makes_a_cpu_node(host: dict[str, str]) -> None:
    _, line = start(host, GPUS_PER_WORKER="0")
    assert line == "ARGS start --address ray-head:6379 --block --num-gpus 0 CUDA="


@pytest.mark.parametrize(
    ("value", "gpus", "message"),
    [
        ("two", "2", "GPUS_PER_WORKER must be a whole number, got 'two'"),
        ("1", "0", "GPUS_PER_WORKER=1 but nvidia-smi lists no GPU in this container"),
    ],
)
def test_bad_settings_stop_with_one_line(host: dict[str, str], value: str, gpus: str, message: str) -> None:
    proc, line = start(host, GPUS_PER_WORKER=value, FAKE_GPUS=gpus)
    assert proc.returncode == 2
    assert line == f"camotune-ray-worker: {message}"
