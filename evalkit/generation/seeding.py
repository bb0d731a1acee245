"""Per-sample seeds: the contract that makes images independent of batching.

Every sample's noise comes from its own CPU generator seeded from (global seed, prompt
set, prompt id, sample index). Batch size, shard count, device and resume point therefore
cannot change which noise a sample gets. CPU generators are used even on GPU runs because
CUDA and CPU generators give different streams for the same seed.
"""

from __future__ import annotations

import hashlib

import torch

SEED_SCHEME = "evalkit-seed-v1"


def sample_seed(global_seed: int, prompt_set: str, prompt_id: str, k: int) -> int:
    """A 63-bit seed; sha256 keeps nearby ids from getting correlated streams."""
    key = "\x00".join((SEED_SCHEME, str(global_seed), prompt_set, prompt_id, str(k)))
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def sample_generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def initial_noise(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """Draw in float32 on the CPU; the caller casts and moves, so dtype and device never
    change the draw itself."""
    return torch.randn(shape, generator=generator, dtype=torch.float32, device="cpu")
