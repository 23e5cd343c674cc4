"""Cores this process may use (affinity, lowered to a cgroup v2 CPU quota) and its speech workers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trunkline.config.cores import cgroup_cpu_limit, speech_workers, usable_cores


@pytest.mark.parametrize(
    ("line", "cpus"),
    [("max 100000", None), ("200000 100000", 2.0), ("150000 100000\n", 1.5), ("", None), ("x y", None),
     ("0 100000", None), ("100000 0", None), ("1 2 3", None)],
)  # fmt: skip
def test_cgroup_cpu_limit(line: str, cpus: float | None) -> None:
    assert cgroup_cpu_limit(line) == cpus


def test_a_quota_lowers_the_affinity_count(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU
    assert usable_cores(tmp_path / "cpu.max") == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path / "cpu.max") == affinity
    assert usable_cores(tmp_path / "missing") == affinity
    (tmp_path / "cpu.max").write_text(f"{(affinity + 8) * 100000} 100000\n")  # a quota above the affinity
    assert usable_cores(tmp_path / "cpu.max") == affinity


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8)])
def test_one_speech_worker_per_two_cores(cores: int, workers: int) -> None:
    assert speech_workers(cores) == workers
