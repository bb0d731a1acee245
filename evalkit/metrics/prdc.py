"""Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020) on FID's features.

The features are FID's own: the PRDC card names an FID card (`params.features`, default the
shipped `fid`), this metric extracts with that card's Inception exactly as FID does, and its
per-image records are FID's records — so it borrows them (`api.Borrowing`): with
`--metrics fid,prdc` FID scores first and PRDC copies its stored records, one Inception pass per
image. The real side is FID's cached reference for the same COCO files at the same resolution
(`FID.reference`, computed once, shared with FID and KID).

Two references, each reproduced with its own conventions (`prdc_values`):
- precision and recall as torch-fidelity 0.4 computes them (`metric_prc`, the issue's choice):
  k = 3 (`prc_neighborhood`), the radius of a sample the distance to its k-th nearest neighbour in
  its own set (self excluded), and a sample counts as covered when its distance is `<=` a radius;
- density and coverage as Naeem et al.'s `prdc` 0.2 (`compute_prdc`): k = 5, strict `<`.
Distances are Euclidean in float64 (the references use float32 torch.cdist and sklearn's float64
upcast; they agree with these except for a pair within float32 rounding of a radius).

Intervals: prompt-bootstrap of the headline value (the card's `value`) like FID's. Precision and
density are means over generated images, so a resample is their mean over the drawn images.
Recall and coverage are means over the reference, recomputed on the drawn images; a generated
image drawn twice is its own nearest neighbour at distance 0, which shrinks its radius (recall's
resamples lean low) — a known limit of bootstrapping a k-NN statistic, documented in docs/metrics.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics import fid_stats
from evalkit.metrics.api import ImageItem, MetricInfo, Record
from evalkit.metrics.cards import MetricCard
from evalkit.metrics.context import MetricContext
from evalkit.metrics.fid import FID
from evalkit.metrics.registry import BUILTINS
from evalkit.prompts.sets import PromptSet

VERSION = "1"
VALUES = ("precision", "recall", "density", "coverage")
CHUNK = 2048  # rows of a distance matrix computed at once (a 2048×10K float64 block is 160 MB)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances, float64, through |a|² + |b|² − 2a·b (BLAS), clipped at 0 before the root."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    squared = (x * x).sum(axis=1)[:, None] + (y * y).sum(axis=1)[None, :] - 2.0 * (x @ y.T)
    return np.sqrt(np.maximum(squared, 0.0))


def radii(features: np.ndarray, k: int) -> np.ndarray:
    """Each sample's distance to its k-th nearest neighbour in its own set (itself the 0-th)."""
    if features.shape[0] <= k:
        raise EvalkitError(f"precision/recall with k = {k} needs more than {k} images per side, "
                           f"got {features.shape[0]}", "score more images, or lower pr_k / dc_k in the card")
    out = [np.partition(distances(features[i:i + CHUNK], features), k, axis=1)[:, k]
           for i in range(0, features.shape[0], CHUNK)]
    return np.concatenate(out)


@dataclass(frozen=True)
class Neighbourhoods:
    """What every value and every resample needs: reference-to-generated distances and the radii."""

    real_fake: np.ndarray  # n_real × n_fake
    real_pr: np.ndarray  # reference radii at pr_k
    real_dc: np.ndarray  # reference radii at dc_k
    fake: np.ndarray  # generated features (recall's radii depend on which are drawn)
    pr_k: int
    dc_k: int

    @classmethod
    def of(cls, real: np.ndarray, fake: np.ndarray, pr_k: int, dc_k: int) -> Neighbourhoods:
        radii(fake, pr_k)  # refuses too few generated images before the big matrix
        return cls(distances(real, fake), radii(real, pr_k), radii(real, dc_k), np.asarray(fake), pr_k, dc_k)

    def values(self, rows: np.ndarray | None = None) -> dict[str, float]:
        """The four values over the generated images `rows` (all of them when None)."""
        d = self.real_fake if rows is None else self.real_fake[:, rows]
        fake = self.fake if rows is None else self.fake[rows]
        fake_pr = radii(fake, self.pr_k)
        return {"precision": float((d <= self.real_pr[:, None]).any(axis=0).mean()),
                "recall": float((d <= fake_pr[None, :]).any(axis=1).mean()),
                "density": float((d < self.real_dc[:, None]).sum(axis=0).mean() / self.dc_k),
                "coverage": float((d.min(axis=1) < self.real_dc).mean())}

    def statistic(self, name: str) -> Callable[[np.ndarray], float]:
        """`name` over the generated rows drawn (a resample); per-image means are precomputed once."""
        if name == "precision":
            inside = np.asarray((self.real_fake <= self.real_pr[:, None]).any(axis=0), dtype=np.float64)
            return lambda rows: float(inside[rows].mean())
        if name == "density":
            counts = np.asarray((self.real_fake < self.real_dc[:, None]).sum(axis=0), dtype=np.float64) / self.dc_k
            return lambda rows: float(counts[rows].mean())
        return lambda rows: self.values(rows)[name]


def prdc_values(real: np.ndarray, fake: np.ndarray, pr_k: int = 3, dc_k: int = 5) -> dict[str, float]:
    """Precision/recall (torch-fidelity's conventions) and density/coverage (prdc's) of `fake` against `real`."""
    return Neighbourhoods.of(real, fake, pr_k, dc_k).values()


class PRDC:
    """Borrowing FID's records; the FID metric does the extraction and owns the reference features."""

    def __init__(self, card: MetricCard, context: MetricContext) -> None:
        from evalkit.metrics.registry import create

        self.card = card
        params = BUILTINS["prdc"].values(card)
        self.headline: str = params["value"]
        if self.headline not in VALUES:
            raise EvalkitError(f"metric card {card.name!r}: unknown value {self.headline!r}", f"use one of {VALUES}")
        self.pr_k: int = params["pr_k"]
        self.dc_k: int = params["dc_k"]
        if self.pr_k < 1 or self.dc_k < 1:
            raise EvalkitError(f"metric card {card.name!r}: pr_k and dc_k must be at least 1",
                               "use the references' k: pr_k 3 (torch-fidelity), dc_k 5 (prdc)")
        self.bootstrap_resamples: int = params["bootstrap_resamples"]
        fid = create(params["features"], context)
        if not isinstance(fid, FID):
            raise EvalkitError(f"metric card {card.name!r}: features names {params['features']!r}, "
                               f"which is not an FID card", "name an FID card (implementation: fid), e.g. fid")
        self.fid = fid
        self.info = MetricInfo(name=card.name, display_name=card.display_name or f"{self.headline} (PRDC)",
                               version=VERSION, higher_is_better=card.higher_is_better, prompt_set=card.prompt_set,
                               description=card.description)
        if card.prompt_set != fid.info.prompt_set:
            raise EvalkitError(f"metric card {card.name!r} scores {card.prompt_set} but its features card "
                               f"{fid.info.name!r} scores {fid.info.prompt_set}", "give both the same prompt_set")

    def lender(self) -> tuple[str, str]:
        return self.fid.info.name, self.fid.fingerprint()

    def fingerprint(self) -> str:
        return self.card.metric_fingerprint(VERSION, features=self.fid.fingerprint(), value=self.headline,
                                            pr_k=self.pr_k, dc_k=self.dc_k)

    def models_used(self) -> dict[str, dict[str, str]]:
        return self.fid.models_used()

    def preflight(self, prompts: PromptSet) -> None:
        self.fid.preflight(prompts)

    def setup(self, device: torch.device) -> None:
        self.fid.setup(device)

    def prepare(self, item: ImageItem, image: Image.Image) -> dict[str, Any]:
        return self.fid.prepare(item, image)

    def score_batch(self, items: Sequence[ImageItem], prepared: Sequence[dict[str, Any]]) -> list[list[Record]]:
        return self.fid.score_batch(items, prepared)

    def _enough(self, records: Sequence[Record]) -> bool:
        """Both sides need more images than the largest k (a k-th neighbour besides itself)."""
        limit = max(self.pr_k, self.dc_k)
        return len(records) > limit and len({str(r["coco_file"]) for r in records}) > limit

    def _neighbourhoods(self, records: Sequence[Record]) -> tuple[Neighbourhoods, str, int]:
        sizes = sorted({(int(r["width"]), int(r["height"])) for r in records})
        if len(sizes) != 1:
            raise EvalkitError(f"PRDC images have {len(sizes)} different sizes {sizes}",
                               "score one resolution per step folder")
        fake = np.stack([fid_stats.decode_features(r["features"]) for r in records])
        coco_files = sorted({str(r["coco_file"]) for r in records})
        key, ref = self.fid.reference(coco_files, sizes[0])
        return Neighbourhoods.of(ref["features"], fake, self.pr_k, self.dc_k), key, len(coco_files)

    def resampler(self, groups: Sequence[Sequence[Record]]) -> Callable[[np.ndarray], float]:
        records = [r for g in groups for r in g]
        if not self._enough(records):
            return lambda indices: math.nan
        hoods = self._neighbourhoods(records)[0]
        statistic = hoods.statistic(self.headline)
        starts = np.cumsum([0] + [len(g) for g in groups])
        rows_of = [np.arange(starts[i], starts[i + 1]) for i in range(len(groups))]
        limit = max(self.pr_k, self.dc_k)

        def resampled(indices: np.ndarray) -> float:
            rows = np.concatenate([rows_of[i] for i in indices])
            return statistic(rows) if len(rows) > limit else math.nan

        return resampled

    def aggregate(self, records: Sequence[Record]) -> dict[str, Any]:
        base: dict[str, Any] = {"n": len(records), "headline": self.headline, "pr_k": self.pr_k, "dc_k": self.dc_k}
        if not self._enough(records):
            return {"value": math.nan, **base, **dict.fromkeys(VALUES, math.nan)}
        hoods, key, n_ref = self._neighbourhoods(records)
        values = hoods.values()
        return {"value": values[self.headline], **values, **base, "n_ref": n_ref, "reference": key}
