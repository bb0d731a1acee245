"""Score the images of generated step folders with metric plugins.

Reads only what `generate` wrote (generation.json, manifest*.jsonl, PNGs), so it can run
later, elsewhere, or on images from an older evalkit. Per-image records are appended to
scores/<metric>/<fingerprint>.jsonl as they are computed (a killed run resumes; a new
metric reuses the images; a changed card never reuses stale scores); the aggregate is
recomputed from the stored records and written next to them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_bytes
from evalkit.fileio.pngio import write_atomic
from evalkit.generation.manifest import ManifestRow
from evalkit.generation.record import GenerationRecord
from evalkit.metrics.api import Borrowing, ImageItem, Metric, Preflighted, Record
from evalkit.options import DEFAULTS
from evalkit.prompts.sets import PromptSet
from evalkit.runtime.memory import is_out_of_memory, release_cached_memory
from evalkit.scoring.onepass import Job, run_pass
from evalkit.scoring.store import ScoreStore
from evalkit.stepdir import StepDir

SUMMARY_SCHEMA = "evalkit.metric-summary/1"


@dataclass(frozen=True)
class MetricResult:
    metric: str
    fingerprint: str
    values: dict[str, Any]
    n_images: int
    scored: int  # images scored in this call
    reused: int  # images whose records were already stored
    seconds: float
    summary_path: Path


def check_inputs(metrics: Sequence[Metric], prompt_sets: Sequence[PromptSet]) -> None:
    """Refuse, before the first image is generated, what scoring would refuse after the last: each
    metric's weights and data files (resolving its fingerprint hashes them; one line when one is
    missing or offline) and any further input it declares (`Preflighted`: FID's COCO images)."""
    by_name = {s.name: s for s in prompt_sets}
    for metric in metrics:
        metric.fingerprint()
        if isinstance(metric, Preflighted) and metric.info.prompt_set in by_name:
            metric.preflight(by_name[metric.info.prompt_set])


def score_step(step_dir: Path, metrics: Sequence[Metric], device: torch.device,
               batch_size: int = DEFAULTS.score_batch_size, quiet: bool = DEFAULTS.quiet) -> list[MetricResult]:
    """Score and aggregate `metrics` on one step folder, decoding each image once for all of them
    (`onepass`)."""
    folder = StepDir(step_dir)
    record, manifest = folder.read_generation(), folder.read_manifest()
    plans = [_Plan(m, image_items(step_dir, record, manifest, m.info.prompt_set, m.info.name),
                   ScoreStore(step_dir, m.info.name, m.fingerprint())) for m in metrics]
    _score_plans(step_dir, plans, device, batch_size, quiet)
    # lenders' aggregates first too: FID's caches the COCO reference statistics that PRDC's then reads
    summaries = {id(plan): _summarise(plan) for plan in sorted(plans, key=lambda p: isinstance(p.metric, Borrowing))}
    return [summaries[id(plan)] for plan in plans]


@dataclass(frozen=True)
class ShardScores:
    """What one shard scored of one metric: its records are in the shard's own file, not aggregated."""

    metric: str
    fingerprint: str
    n_images: int
    scored: int
    seconds: float


def score_shard(step_dir: Path, metrics: Sequence[Metric], device: torch.device, files: Collection[str],
                shard_index: int, shard_count: int, batch_size: int = DEFAULTS.score_batch_size,
                quiet: bool = DEFAULTS.quiet) -> list[ShardScores]:
    """Score the images `files` (one shard's samples) into the shard's own record files; the step's
    aggregate is `merge`'s, once every shard has finished."""
    folder = StepDir(step_dir)
    record, manifest = folder.read_generation(), folder.read_manifest()
    wanted = set(files)
    mine = {file: row for file, row in manifest.items() if file in wanted}
    plans = []
    for metric in metrics:
        owns = any(row.prompt_set == metric.info.prompt_set for row in mine.values())  # else: all in others
        items = image_items(step_dir, record, mine, metric.info.prompt_set, metric.info.name) if owns else []
        plans.append(_Plan(metric, items,
                           ScoreStore(step_dir, metric.info.name, metric.fingerprint(), shard_index, shard_count)))
    _score_plans(step_dir, plans, device, batch_size, quiet)
    return [ShardScores(p.metric.info.name, p.store.fingerprint, len(p.items), len(p.pending), p.seconds)
            for p in plans]


@dataclass
class _Plan:
    """One metric of a scoring call: its images, its store, and what this call found and did."""

    metric: Metric
    items: list[ImageItem]
    store: ScoreStore
    pending: list[ImageItem] = field(default_factory=list)  # without stored records when the call began
    done: dict[tuple[str, str], list[Record]] = field(default_factory=dict)  # the records stored before
    seconds: float = 0.0


def _score_plans(step_dir: Path, plans: Sequence[_Plan], device: torch.device, batch_size: int,
                 quiet: bool) -> None:
    """Store records for every plan's images without them, in two passes over the images: the metrics
    that compute records, then those that borrow them (`Borrowing`), so a lender scored in the same
    call has stored its records by the time its borrower looks (`--metrics fid,prdc` runs Inception
    once per image) and a borrower scores only what no lender has."""
    for borrowing in (False, True):
        jobs: list[tuple[_Plan, Job]] = []
        for plan in plans:
            metric = plan.metric
            if isinstance(metric, Borrowing) != borrowing:
                continue
            started = time.perf_counter()
            plan.done = plan.store.scored()
            plan.pending = [it for it in plan.items if (it.file, it.sha256) not in plan.done]
            unscored = _borrow(step_dir, metric, plan.store, plan.pending) \
                if plan.pending and isinstance(metric, Borrowing) else plan.pending
            if unscored:
                metric.setup(device)
                fitting = FittingBatches(metric, batch_size, device)
                jobs.append((plan, Job(metric, plan.items, unscored, fitting.score, plan.store.append,
                                       label=f"{metric.info.name} {step_dir}")))
            plan.seconds += time.perf_counter() - started
        run_pass([job for _, job in jobs], batch_size, quiet)
        for plan, job in jobs:
            plan.seconds += job.seconds


def _borrow(step_dir: Path, metric: Borrowing, store: ScoreStore, pending: list[ImageItem]) -> list[ImageItem]:
    """Copy the lender's stored records of `pending` into `store`; returns the items it has none for."""
    lent = ScoreStore(step_dir, *metric.lender()).scored()
    found = [it for it in pending if (it.file, it.sha256) in lent]
    if found:
        store.append(found, [lent[(it.file, it.sha256)] for it in found])
    return [it for it in pending if (it.file, it.sha256) not in lent]


def _summarise(plan: _Plan) -> MetricResult:
    """The metric's aggregate from every stored record of its images, written next to them."""
    started = time.perf_counter()
    metric, items, store = plan.metric, plan.items, plan.store
    done = plan.done
    if plan.pending or store.shard_files():  # else the records read before scoring are all there is
        done = store.fold_shards([(it.file, it.sha256) for it in items])
    records = [r for it in items for r in done[(it.file, it.sha256)]]
    values = metric.aggregate(records)
    payload = {"schema": SUMMARY_SCHEMA, "metric": metric.info.name, "display_name": metric.info.display_name,
               "version": metric.info.version, "higher_is_better": metric.info.higher_is_better,
               "prompt_set": metric.info.prompt_set, "fingerprint": store.fingerprint, "n_images": len(items),
               "values": values}
    write_atomic(store.files.summary, (json.dumps(payload, indent=2, sort_keys=True, default=float) + "\n")
                 .encode("utf-8"))
    seconds = plan.seconds + time.perf_counter() - started
    return MetricResult(metric.info.name, store.fingerprint, values, len(items), len(plan.pending),
                        len(items) - len(plan.pending), seconds, store.files.summary)


def missing_records(step_dir: Path, metric: Metric) -> list[str]:
    """The image files of the step's manifest that have no stored record of `metric` (what scoring
    it would compute); `merge` refuses to compute them."""
    folder = StepDir(step_dir)
    items = image_items(step_dir, folder.read_generation(), folder.read_manifest(), metric.info.prompt_set,
                        metric.info.name)
    done = ScoreStore(step_dir, metric.info.name, metric.fingerprint()).scored()
    return [it.file for it in items if (it.file, it.sha256) not in done]


class FittingBatches:
    """`metric.score_batch` that backs off on out-of-memory: a batch that does not fit is split in
    halves (and later batches are cut to the size that fitted), so a long scoring run survives a
    memory spike; records do not depend on the batch size (the plugin contract) beyond the float
    rounding of batched kernels, so the numbers agree to ~1e-7. Only one image that does not fit
    is an error, naming the metric and batch size."""

    def __init__(self, metric: Metric, batch_size: int, device: torch.device) -> None:
        self.metric, self.limit, self.device = metric, batch_size, device

    def score(self, items: Sequence[ImageItem], prepared: Sequence[Any]) -> list[list[Record]]:
        records: list[list[Record]] = []
        start = 0
        while start < len(items):
            size = min(self.limit, len(items) - start)
            try:
                records += self.metric.score_batch(items[start:start + size], prepared[start:start + size])
            except RuntimeError as e:  # torch.OutOfMemoryError is one; so are cuBLAS/cuDNN alloc failures
                if not is_out_of_memory(e):
                    raise
                release_cached_memory(self.device)
                if size == 1:
                    raise EvalkitError(f"out of memory scoring one image with {self.metric.info.name} on "
                                       f"{self.device} (batch size 1)",
                                       "free the device's memory, or score with --device cpu") from e
                self.limit = (size + 1) // 2
                continue
            start += size
        return records


def image_items(step_dir: Path, record: GenerationRecord, manifest: dict[str, ManifestRow], prompt_set: str,
                metric: str) -> list[ImageItem]:
    rows = [r for r in manifest.values() if r.prompt_set == prompt_set]
    if not rows:
        raise EvalkitError(f"{step_dir} has no images of prompt set {prompt_set!r}, which {metric} scores",
                           f"generate them with --prompts {prompt_set} (same --out)")
    prompts = record.load_prompt_set(prompt_set)
    rows.sort(key=lambda r: (prompts.position(r.prompt_id), r.k))  # generation's order: batches as it made them
    items = []
    for row in rows:
        prompt = prompts.by_id(row.prompt_id)
        if sha256_bytes(prompt.text.encode("utf-8")) != row.prompt_sha256:
            raise EvalkitError(f"prompt {row.prompt_id} of {prompt_set} changed since {step_dir} was generated",
                               "re-run `evalkit generate` on the same --out to regenerate the affected images")
        items.append(ImageItem(prompt_set, prompt, row.k, row.file, step_dir / row.file, row.sha256))
    return items
