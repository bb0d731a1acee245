"""The demo's CPU thread budget: idle cores only, the user's OMP_NUM_THREADS first, the caller's setting restored."""

from __future__ import annotations

import pytest
import torch

from evalkit.runtime.threads import busy_cores, cpu_threads, thread_budget, torch_threads, usable_cores


@pytest.mark.parametrize(("cores", "load", "expected"), [(2, 0.0, 2), (2, 0.4, 2), (2, 1.0, 1), (2, 7.5, 1),
                                                         (16, 3.2, 13), (4, -1.0, 4)])
def test_budget_leaves_busy_cores_alone(cores: int, load: float, expected: int) -> None:
    assert thread_budget(cores, load) == expected


def test_busy_cores_reads_the_kernels_counters(tmp_path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0 0 0\n", encoding="ascii")
    assert busy_cores(stat, seconds=0.01) == 0.0  # counters that did not move: nothing measurable
    assert busy_cores(tmp_path / "missing", seconds=0.01) == 0.0
    assert 0.0 <= busy_cores(seconds=0.05) <= usable_cores() + 1


def test_omp_num_threads_wins_and_garbage_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    assert 1 <= cpu_threads() <= usable_cores()


def test_the_callers_thread_count_is_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(1) as count:
        assert count == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
