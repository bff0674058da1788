"""How many CPU cores this process may really use.

``os.cpu_count()`` (and torch's default thread count, its physical cores) counts the cores of
the machine; in a container or under ``taskset`` the process may run on fewer, and an OpenMP
pool larger than that spends its time waiting for cores. Other processes' load is not counted:
on a machine busy with other work, fewer threads (``--threads 1``) can still be faster.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cgroup_cpu_limit(*, v2: Path = CGROUP_V2_MAX, v1_quota: Path = CGROUP_V1_QUOTA,
                     v1_period: Path = CGROUP_V1_PERIOD) -> int | None:
    """The cgroup CPU quota in whole cores (rounded up, at least 1), or None when there is none
    or it cannot be read. cgroup v2 ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD") first, then
    v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1 = none)."""
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            if quota == "max":
                return None
            return max(1, math.ceil(int(quota) / int(period)))
        if v1_quota.is_file() and v1_period.is_file():
            quota_us, period_us = int(v1_quota.read_text()), int(v1_period.read_text())
            if quota_us <= 0 or period_us <= 0:
                return None
            return max(1, math.ceil(quota_us / period_us))
    except (OSError, ValueError):
        return None
    return None


def available_cpus() -> int:
    """Cores this process may run on: its CPU affinity (``os.sched_getaffinity``, else
    ``os.cpu_count()``), capped by a cgroup CPU quota when one is readable. At least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cores, limit) if limit is not None else cores)
