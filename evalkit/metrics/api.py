"""The metric plugin contract: batch-first, per-sample records, aggregate from records.

A metric scores images that already exist (the files `generate` wrote). It declares what it
is (`info`), everything that changes its numbers (`fingerprint`), prepares one image at a
time off the main thread (`prepare`: decoding, resizing, normalising — run in worker
threads), scores a batch of prepared images (`score_batch`, one list of records per image;
TIFA returns one record per question), and aggregates stored records (`aggregate`), so
aggregates, breakdowns and confidence intervals can always be recomputed from the records.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from evalkit.prompts.sets import Prompt, PromptSet
from evalkit.results.recordview import RecordView

Record = dict[str, Any]


@dataclass(frozen=True)
class MetricInfo:
    name: str  # the name users type: `--metrics clip`
    display_name: str
    version: str  # bump whenever the implementation changes a number
    higher_is_better: bool
    prompt_set: str  # the set it scores by default (the study's choice)
    description: str = ""


@dataclass(frozen=True)
class ImageItem:
    """One generated image, with what a metric may need to know about it."""

    prompt_set: str
    prompt: Prompt
    k: int
    file: str  # relative to the step folder, as in the manifest
    path: Path
    sha256: str


@runtime_checkable
class Metric(Protocol):
    info: MetricInfo

    def fingerprint(self) -> str:
        """Hash of everything that changes this metric's numbers (card, weights, versions)."""
        ...

    def setup(self, device: torch.device) -> None:
        """Load models once; called before the first batch, never in a constructor."""
        ...

    def prepare(self, item: ImageItem, image: Image.Image) -> Any:
        """Per-image preprocessing; runs in worker threads, so it must not touch the GPU."""
        ...

    def score_batch(self, items: Sequence[ImageItem], prepared: Sequence[Any]) -> list[list[Record]]:
        """One list of JSON-able records per item, in order."""
        ...

    def aggregate(self, records: Sequence[Record]) -> dict[str, Any]:
        """The metric's values from stored records (at least `value` and `n`)."""
        ...


# --- optional: inputs checked before any image is made ---------------------------------------------------------


@runtime_checkable
class Preflighted(Protocol):
    """A metric whose inputs go beyond its weights (FID's COCO reference images): `preflight` refuses
    now, with one EvalkitError line, what scoring `prompts` would refuse after hours of generation.
    Every metric's weights and data files are already checked by resolving its `fingerprint()`."""

    def preflight(self, prompts: PromptSet) -> None:
        ...


# --- optional: records another metric already computes ----------------------------------------------------


@runtime_checkable
class Borrowing(Protocol):
    """A metric whose per-image records are exactly another metric's (PRDC's are FID's Inception
    features): scoring copies the records already stored under `lender()` — (metric name,
    fingerprint) — instead of recomputing them, and scores a lender in the same call first, so
    `--metrics fid,prdc` runs Inception once per image."""

    def lender(self) -> tuple[str, str]: ...


# --- optional: how the site shows per-image records ---------------------------------------------------------


@runtime_checkable
class RecordViewed(Protocol):
    """A metric whose per-image records say more than one `value` (TIFA's questions and answers): the
    site shows each image's score from `record_view.score` and lists `record_view.fields` per record."""

    record_view: RecordView


@runtime_checkable
class ModelsRecorded(Protocol):
    """A metric that names the models its numbers come from, so run.json says which judge produced a
    value (a GIT TIFA and an mPLUG TIFA are different metrics) without decoding the fingerprint:
    role -> {"source", "revision", "fingerprint", and what else names it, e.g. TIFA's "backend"}."""

    def models_used(self) -> dict[str, dict[str, str]]: ...


# --- optional: what confidence intervals and paired comparisons need ----------------------------------------

Ratio = tuple[list[float], list[float]]  # per-prompt numerators and denominators


@runtime_checkable
class PromptDecomposable(Protocol):
    """A metric whose value and breakdowns are sum(num) / sum(den) over prompts.

    `groups` holds each prompt's records in prompt-set order. Keys: "value" for the
    headline (a mean over prompts has den = 1) and "<group>/<category>" for breakdowns the
    prompt tags cannot give (TIFA's "element_type/color"). Breakdowns by prompt tag are
    derived from "value" by evalkit itself.
    """

    def prompt_ratios(self, groups: Sequence[Sequence[Record]]) -> dict[str, Ratio]:
        ...


@runtime_checkable
class PromptResamplable(Protocol):
    """A metric whose value is not a ratio over prompts (FID): a statistic of resampled prompt indices.

    `bootstrap_resamples` bounds the cost, since every resample recomputes the statistic.
    """

    bootstrap_resamples: int

    def resampler(self, groups: Sequence[Sequence[Record]]) -> Callable[[np.ndarray], float]:
        ...


def mean_value_ratios(groups: Sequence[Sequence[Record]]) -> dict[str, Ratio]:
    """Per prompt the mean of its images' `value` (several images per prompt count once)."""
    num = [sum(float(r["value"]) for r in g) / len(g) if g else 0.0 for g in groups]
    den = [1.0 if g else 0.0 for g in groups]
    return {"value": (num, den)}


def mean_value_aggregate(records: Sequence[Record], **extra: Any) -> dict[str, Any]:
    """The mean and sample stdev of the records' `value` over images (NaN when undefined), plus `extra`."""
    values = [float(r["value"]) for r in records]
    if not values:
        return {"value": math.nan, "n": 0, "stdev": math.nan, **extra}
    stdev = statistics.stdev(values) if len(values) > 1 else math.nan
    return {"value": math.fsum(values) / len(values), "n": len(values), "stdev": stdev, **extra}
