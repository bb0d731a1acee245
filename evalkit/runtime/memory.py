"""Recognising "the device ran out of memory", however the library reports it.

PyTorch raises `torch.OutOfMemoryError` for its own allocator, but cuBLAS and cuDNN workspace
allocation failures arrive as a plain RuntimeError (`CUBLAS_STATUS_ALLOC_FAILED`,
`CUDNN_STATUS_ALLOC_FAILED`, "out of memory" from other backends). Generation and scoring back
off on all of them and on nothing else: any other RuntimeError is a bug and keeps its traceback.
"""

from __future__ import annotations

import torch

OUT_OF_MEMORY_MARKERS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
                         "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE", "HIP out of memory", "MPS backend out of memory")


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error) for marker in OUT_OF_MEMORY_MARKERS)


def release_cached_memory(device: torch.device) -> None:
    """Give the caching allocator's free blocks back before retrying smaller."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
