"""The metric plugin contract: batch-first, per-sample records, aggregate from records.

A metric scores images that already exist (the files `generate` wrote). It declares what it
is (`info`), everything that changes its numbers (`fingerprint`), prepares one image at a
time off the main thread (`prepare`: decoding, resizing, normalising — run in worker
threads), scores a batch of prepared images (`score_batch`, one list of records per image;
TIFA returns one record per question), and aggregates stored records (`aggregate`), so
aggregates, breakdowns and confidence intervals can always be recomputed from the records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image

from evalkit.promptsets import Prompt

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
