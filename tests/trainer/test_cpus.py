"""The cores a process may use: affinity, capped by a cgroup CPU quota (files written here)."""

from __future__ import annotations

import os
from pathlib import Path

from camotune.trainer.config import TrainConfig
from camotune.trainer.cpus import available_cpus, cgroup_cpu_limit


def test_cgroup_v2_and_v1_quotas(tmp_path: Path) -> None:
    v2, quota, period = tmp_path / "cpu.max", tmp_path / "quota", tmp_path / "period"
    none = tmp_path / "absent"
    v2.write_text("150000 100000\n")
    assert cgroup_cpu_limit(v2=v2, v1_quota=none, v1_period=none) == 2  # 1.5 cores -> 2
    v2.write_text("max 100000\n")
    assert cgroup_cpu_limit(v2=v2, v1_quota=none, v1_period=none) is None
    v2.write_text("garbage\n")
    assert cgroup_cpu_limit(v2=v2, v1_quota=none, v1_period=none) is None
    quota.write_text("50000\n")
    period.write_text("100000\n")
    assert cgroup_cpu_limit(v2=none, v1_quota=quota, v1_period=period) == 1
    quota.write_text("-1\n")
    assert cgroup_cpu_limit(v2=none, v1_quota=quota, v1_period=period) is None
    assert cgroup_cpu_limit(v2=none, v1_quota=none, v1_period=none) is None


def test_zero_threads_means_the_cores_this_process_may_use() -> None:
    cores = available_cpus()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    assert TrainConfig().resolved_threads == cores
    assert TrainConfig(threads=3).resolved_threads == 3
