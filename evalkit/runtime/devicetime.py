"""Timing and memory hygiene that is correct on GPUs, shared by profiling and benchmarks."""

from __future__ import annotations

import gc
import time

import torch


def synced_clock(device: torch.device) -> float:
    """A clock read after queued GPU work has finished (CUDA kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def release_memory(device: torch.device) -> None:
    """Free what the last measurement left behind, so the next one does not pay for it."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
