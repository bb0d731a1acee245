"""How many CPU threads torch may use for a command: the cores this process may run on, less the busy ones.

torch starts one intra-op thread per visible core. On a machine whose cores are already busy (a CI
runner, a test suite beside it) those threads oversubscribe and every parallel region waits for the
slowest one: the 2-core demo took 8 minutes instead of under a minute that way. "Busy" is measured
now, from the kernel's CPU counters over a quarter of a second (the load average lags by minutes,
so it would still count a command that just finished); a user's OMP_NUM_THREADS always wins.
Numbers are reproducible bit for bit at a given thread count; set OMP_NUM_THREADS to fix it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SAMPLE_SECONDS = 0.25


def usable_cores() -> int:
    """The cores this process may be scheduled on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def thread_budget(cores: int, busy: float) -> int:
    """Threads for `cores` cores of which `busy` cores' worth are taken: at least one, at most all."""
    return max(1, min(cores, round(cores - max(busy, 0.0))))


def _cpus() -> set[int] | None:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def _cpu_counters(stat: Path, cpus: set[int] | None) -> tuple[int, int, int]:
    """(idle, total) jiffies summed over the CPUs in `cpus` (all when None), and how many were counted."""
    idle = total = counted = 0
    for line in stat.read_text(encoding="ascii").splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()) or (cpus is not None and int(name[3:]) not in cpus):
            continue
        fields = [int(v) for v in rest.split()]
        idle += fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        total += sum(fields[:8])  # guest time is already inside user time
        counted += 1
    return idle, total, counted


def busy_cores(stat: Path = Path("/proc/stat"), seconds: float = SAMPLE_SECONDS) -> float:
    """Cores' worth of CPU time that other processes used, on the cores this process may run on, over the
    last `seconds` (0 where it cannot be read: no /proc on macOS or Windows)."""
    cpus = _cpus()
    try:
        idle0, total0, counted = _cpu_counters(stat, cpus)
        own0 = time.process_time()
        time.sleep(seconds)
        idle1, total1, _ = _cpu_counters(stat, cpus)
        own = time.process_time() - own0
    except (OSError, ValueError, IndexError):
        return 0.0
    if total1 <= total0 or counted == 0:
        return 0.0
    used = (1.0 - (idle1 - idle0) / (total1 - total0)) * counted  # every process, this one included
    return max(0.0, used - own / seconds)


def cpu_threads() -> int:
    """The budget for now, or OMP_NUM_THREADS when the user set it."""
    wanted = os.environ.get("OMP_NUM_THREADS", "")
    if wanted.isdigit() and int(wanted) > 0:
        return int(wanted)
    return thread_budget(usable_cores(), busy_cores())


@contextmanager
def torch_threads(count: int) -> Iterator[int]:
    """torch's intra-op thread count set to `count` for the block, and restored after it (the caller's setting)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(before)
