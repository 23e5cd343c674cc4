"""How many CPU cores this process may use, and the speech-model workers sized from them.

Cores are the CPU affinity set, lowered to a container's CPU quota (cgroup v2 `cpu.max`) when there is one:
`os.cpu_count()` reports the host's cores, and sizing from those inside a 2-CPU container would overload it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
THREADS_PER_SPEECH_JOB = 2  # a whisper decode or a piper synthesis runs on two threads


def cgroup_cpu_limit(cpu_max: str) -> float | None:
    """CPUs allowed by a cgroup v2 `cpu.max` line ("200000 100000" → 2.0); None for "max" or garbage."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cores(cpu_max_path: Path = CGROUP_CPU_MAX) -> int:
    """The CPU affinity count, lowered to the cgroup's CPU quota (rounded up) when one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        limit = cgroup_cpu_limit(cpu_max_path.read_text())
    except OSError:
        limit = None
    return max(1, min(cores, math.ceil(limit))) if limit is not None else max(1, cores)


def speech_workers(cores: int) -> int:
    """Parallel whisper (or piper) jobs for `cores`: one per two cores, at least one."""
    return max(1, cores // THREADS_PER_SPEECH_JOB)
