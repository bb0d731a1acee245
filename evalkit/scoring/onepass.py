"""One pass over a step's images for all the metrics scored together: each PNG is read, hash-checked and
decoded once, and every metric that still needs it prepares its own input from that one decode.

A step is 14,081 PNGs and `--metrics tifa,imagereward,clip,fid,hpsv2` used to read, hash and decode
each of them five times (once per metric, one metric after another); at 256 px that host work is a
visible share of a GPU's scoring time. Here the images are walked once in generation order, in
chunks of the scoring batch size, with the next chunk read, decoded and prepared in worker threads
while the current one is scored. Each metric still gets exactly the batches it got when it was
scored alone — its own pending images cut into `batch_size` runs in order (a metric buffers until it
has a full batch) — so records are identical to scoring the metrics one at a time, to the bit.
Memory stays bounded by two chunks of prepared inputs plus one partial batch per metric.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_bytes
from evalkit.metrics.api import ImageItem, Metric, Record

# Prepare work is PIL/numpy and releases the GIL; more workers than cores only adds contention.
PREPARE_WORKERS = max(2, min(8, os.cpu_count() or 2))

Score = Callable[[Sequence[ImageItem], Sequence[Any]], list[list[Record]]]
Store = Callable[[Sequence[ImageItem], list[list[Record]]], None]


@dataclass
class Job:
    """One metric's share of the pass: the images it still needs, how to score a batch (with its
    out-of-memory back-off) and where the records go."""

    metric: Metric
    order: list[ImageItem]  # all of the metric's images in generation order (what fixes its batches)
    pending: list[ImageItem]  # those it still needs, a subsequence of `order`
    score: Score
    store: Store
    label: str
    seconds: float = 0.0  # its scoring calls, plus its share of the waits for decoded, prepared images
    _buffer: list[tuple[ImageItem, Any]] = field(default_factory=list)
    _done: int = 0

    def add(self, item: ImageItem, prepared: Any, batch_size: int, quiet: bool) -> None:
        self._buffer.append((item, prepared))
        if len(self._buffer) == batch_size:
            self.flush(quiet)

    def flush(self, quiet: bool) -> None:
        if not self._buffer:
            return
        items, prepared = [it for it, _ in self._buffer], [p for _, p in self._buffer]
        self._buffer = []
        started = time.perf_counter()
        self.store(items, self.score(items, prepared))
        self.seconds += time.perf_counter() - started
        self._done += len(items)
        if not quiet:
            print(f"  {self.label}: {self._done}/{len(self.pending)} images", flush=True)


def read_verified(item: ImageItem) -> Image.Image:
    """The image as RGB, refusing one whose bytes are not what the manifest recorded."""
    data = item.path.read_bytes()
    if sha256_bytes(data) != item.sha256:
        raise EvalkitError(f"{item.path} changed since it was generated (hash differs from the manifest)",
                           "re-run `evalkit generate` on the same --out to regenerate it")
    with Image.open(BytesIO(data)) as image:
        return image.convert("RGB")


def _decode_and_prepare(wanted_by: Sequence[tuple[Metric, ImageItem]]) -> list[Any]:
    image = read_verified(wanted_by[0][1])
    return [metric.prepare(item, image) for metric, item in wanted_by]


def run_pass(jobs: Sequence[Job], batch_size: int, quiet: bool) -> None:
    """Score every job's pending images, decoding each file once for all jobs that need it."""
    wanted: dict[str, list[tuple[int, ImageItem]]] = {}  # file -> (job, its item), in job order
    for index, job in enumerate(jobs):
        for item in job.pending:
            wanted.setdefault(item.file, []).append((index, item))
    # generation order, so each job's pending images arrive in its own order and it batches them as alone
    files = list(dict.fromkeys(it.file for job in jobs for it in job.order if it.file in wanted))
    chunks = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
    if not chunks:
        return

    def submit(pool: ThreadPoolExecutor, chunk: list[str]) -> list[Future[list[Any]]]:
        return [pool.submit(_decode_and_prepare, [(jobs[j].metric, it) for j, it in wanted[f]]) for f in chunk]

    with ThreadPoolExecutor(max_workers=PREPARE_WORKERS) as pool:
        upcoming = submit(pool, chunks[0])
        for index, chunk in enumerate(chunks):
            waited = time.perf_counter()
            prepared = [f.result() for f in upcoming]
            _share_wait(jobs, [wanted[f] for f in chunk], time.perf_counter() - waited)
            if index + 1 < len(chunks):
                upcoming = submit(pool, chunks[index + 1])
            for file, per_job in zip(chunk, prepared, strict=True):
                for (j, item), value in zip(wanted[file], per_job, strict=True):
                    jobs[j].add(item, value, batch_size, quiet)
    for job in jobs:
        job.flush(quiet)


def _share_wait(jobs: Sequence[Job], wanted: Sequence[Sequence[tuple[int, ImageItem]]], seconds: float) -> None:
    """A wait for a chunk's images, charged to the jobs by how many of them each needed."""
    counts = [j for users in wanted for j, _ in users]
    for j in set(counts):
        jobs[j].seconds += seconds * counts.count(j) / len(counts)
