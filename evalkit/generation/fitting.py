"""What fits in the device's memory: the generation batch size, and the VAE decode's chunk.

A checkpoint is 14,081 images, so the batch size decides throughput, and an out-of-memory late in a
run must never lose work. `BatchFit` is the state of `--batch-size auto` for one shape of work
(pipeline class, resolution, dtype): it starts at the device's `AutoRange.start`, doubles after
every full batch that fitted until a batch fails or `AutoRange.ceiling` is reached, halves on a
failure, and never tries again a size that failed. The `Generator` keeps one per shape for the whole
run, so the second checkpoint of a sweep starts at the size the first one found instead of
probing (and failing) again.

The VAE decode runs after all denoising steps of a batch; an out-of-memory there used to throw
those steps away. `ChunkedDecode` stands in for `vae.decode` during a batch and, on an allocation
failure, decodes the same latents in halves (then quarters, ...) and concatenates: the latents
are kept, and the decode's per-image arithmetic is the same (a VAE has no cross-image ops), so
images agree with an unchunked decode up to the float rounding of a smaller conv batch. The
chunk that fitted is remembered for the following batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from evalkit.runtime.memory import is_out_of_memory, release_cached_memory


@dataclass(frozen=True)
class AutoRange:
    """Where `--batch-size auto` starts and how far it probes upward on one device type.

    On the CPU the ceiling equals the start: running out of host memory swaps or gets the
    process killed instead of raising an error to back off from, so nothing is probed there."""

    start: int
    ceiling: int


AUTO_RANGES = {"cuda": AutoRange(start=32, ceiling=256), "cpu": AutoRange(start=8, ceiling=8)}


def auto_range(device: torch.device) -> AutoRange:
    return AUTO_RANGES.get(device.type, AUTO_RANGES["cpu"])


@dataclass
class BatchFit:
    """The auto batch size of one shape of work, learnt from the batches that fitted and failed."""

    limits: AutoRange
    size: int = 0  # the next batch's size; 0 until first used
    fitted: int = 0  # the largest batch that ran
    failed: int = 0  # the smallest batch that ran out of memory; 0 when none has
    decode_chunk: int = 0  # the VAE decode's chunk after a decode ran out of memory; 0 = whole batch

    def __post_init__(self) -> None:
        if not self.size:
            self.size = self.limits.start

    def succeeded(self, size: int) -> None:
        """A batch of `size` fitted: a full-sized one lets the next probe twice as large."""
        self.fitted = max(self.fitted, size)
        if size == self.size:
            grown = self.size * 2
            if grown <= self.limits.ceiling and (not self.failed or grown < self.failed):
                self.size = grown

    def ran_out(self, size: int) -> bool:
        """A batch of `size` did not fit: halve the target, or the batch when that is no smaller (a batch
        cut short at the end of a set); returns False when it was one image already."""
        self.failed = min(self.failed, size) if self.failed else size
        if size <= 1:
            return False
        self.size = self.size // 2 if self.size // 2 < size else size // 2
        return True


class ChunkedDecode:
    """`vae.decode` that splits its batch on out-of-memory instead of failing (module doc)."""

    def __init__(self, decode: Callable[..., Any], device: torch.device, fit: BatchFit) -> None:
        self.decode, self.device, self.fit = decode, device, fit
        self.calls: list[int] = []  # the chunk sizes decoded, for tests and benches

    def __call__(self, latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        total = latents.shape[0]
        chunk = min(self.fit.decode_chunk or total, total)
        while True:
            try:
                return self._decode_chunks(latents, chunk, args, kwargs)
            except RuntimeError as e:  # torch.OutOfMemoryError is one; so are cuBLAS/cuDNN alloc failures
                if not is_out_of_memory(e) or chunk == 1:
                    raise
                release_cached_memory(self.device)
                chunk = (chunk + 1) // 2
                self.fit.decode_chunk = chunk

    def _decode_chunks(self, latents: torch.Tensor, chunk: int, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
        if chunk >= latents.shape[0]:
            self.calls.append(latents.shape[0])
            return self.decode(latents, *args, **kwargs)
        parts = []
        for start in range(0, latents.shape[0], chunk):
            self.calls.append(min(chunk, latents.shape[0] - start))
            parts.append(self.decode(latents[start:start + chunk], *args, **_sliced(kwargs, start, chunk,
                                                                                  latents.shape[0])))
        return _concatenated(parts)


def _sliced(kwargs: dict[str, Any], start: int, chunk: int, total: int) -> dict[str, Any]:
    """Per-sample generator lists (a consistency decoder's) follow their samples into the chunk."""
    generator = kwargs.get("generator")
    if isinstance(generator, list) and len(generator) == total:
        return {**kwargs, "generator": generator[start:start + chunk]}
    return kwargs


def _concatenated(parts: list[Any]) -> Any:
    """The chunks' outputs as one: a tuple (`return_dict=False`) or a DecoderOutput-like `.sample`."""
    first = parts[0]
    if isinstance(first, tuple):
        return tuple(torch.cat([p[i] for p in parts]) for i in range(len(first)))
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    return type(first)(sample=torch.cat([p.sample for p in parts]))


@contextmanager
def chunked_decode(vae: Any, device: torch.device, fit: BatchFit) -> Iterator[ChunkedDecode]:
    """`vae.decode` replaced by a `ChunkedDecode` on this instance for one batch, then restored, so a
    pipeline handed in by a training loop (evaluate()) is left as it came."""
    own = vars(vae).get("decode")  # an instance attribute someone else set, or None
    wrapper = ChunkedDecode(vae.decode, device, fit)
    vae.decode = wrapper
    try:
        yield wrapper
    finally:
        if own is None:
            del vae.decode
        else:
            vae.decode = own
