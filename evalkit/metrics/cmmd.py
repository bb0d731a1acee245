"""CMMD (Jayasumana et al. 2024, "Rethinking FID"): MMD of CLIP embeddings with a Gaussian RBF kernel.

The reference is the authors' code (google-research/cmmd, JAX) as its PyTorch port
(sayakpaul/cmmd-pytorch) runs it; neither is a package, so parity/ref_cmmd.py restates the port's
steps and the port itself is compared when a checkout is given (tests/test_parity_cmmd.py):
- images (`io_util`): PIL open, centre crop to the shorter side (offsets floored), PIL bicubic
  resize (antialiased) to the model's crop size (336), float32 /255; `embedding._resize_bicubic`
  then resizes again with torch's bicubic to the same size (the identity); CLIPImageProcessor with
  only `do_normalize`; `CLIPVisionModelWithProjection` of openai/clip-vit-large-patch14-336,
  `image_embeds` L2-normalised;
- `distance.mmd`: the biased (minimum-variance) MMD² estimator, diagonals included, with
  k(x, y) = exp(−‖x − y‖² / (2σ²)), σ = 10, times 1000 (`_SCALE`).
Here the kernel sums are float64 (the reference's float32 means of ~0.99-valued kernels lose ~1e-4
of a value of ~1); embeddings are float32 as the model gives them.

The real side is the COCO val2014 images of the prompts (coco-10k: the images whose captions were
generated), embedded once and cached like FID's reference (`coco_reference`; the preprocessing does
not depend on the generation resolution, so one entry serves every resolution). The authors'
JAX code drops the images left over after batching; the PyTorch port (and evalkit) keep them.
Intervals: prompt-bootstrap of the generated side, the reference fixed (as FID's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from evalkit.fileio.hashing import sha256_json
from evalkit.metrics import fid_stats
from evalkit.metrics.api import ImageItem, MetricInfo, Record
from evalkit.metrics.cards import MetricCard
from evalkit.metrics.clip_vision import load_clip_vision
from evalkit.metrics.coco_reference import CocoImages
from evalkit.metrics.context import MetricContext
from evalkit.metrics.models import ResolvedModel, resolve_model
from evalkit.metrics.preprocess import CLIP_MEAN, CLIP_STD, to_normalized_tensor
from evalkit.metrics.registry import BUILTINS
from evalkit.prompts.sets import PromptSet

VERSION = "1"
PREPROCESS = "square-crop-floor+pil-bicubic+clip-normalize"
REFERENCE_BATCH = 32


def cmmd_pixels(image: Image.Image, size: int) -> torch.Tensor:
    """The reference's image reading: centre square (floored offsets), PIL bicubic to size², /255, normalise."""
    rgb = image.convert("RGB")
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    square = rgb.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    return to_normalized_tensor(square, CLIP_MEAN, CLIP_STD)


def rbf_mean(x: np.ndarray, y: np.ndarray, gamma: float) -> float:
    """mean over all pairs of exp(−γ‖x − y‖²), float64, in row blocks (10K × 10K never at once)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    b_sq = (b * b).sum(axis=1)
    total = 0.0
    for i in range(0, a.shape[0], 2048):
        block = a[i:i + 2048]
        squared = (block * block).sum(axis=1)[:, None] + b_sq[None, :] - 2.0 * (block @ b.T)
        total += float(np.exp(-gamma * squared).sum())
    return total / (a.shape[0] * b.shape[0])


def mmd(x: np.ndarray, y: np.ndarray, sigma: float = 10.0, scale: float = 1000.0) -> float:
    """The reference's `distance.mmd`: scale · (E k(x,x') + E k(y,y') − 2 E k(x,y)), biased, σ-RBF kernel."""
    gamma = 1.0 / (2.0 * sigma ** 2)
    return scale * (rbf_mean(x, x, gamma) + rbf_mean(y, y, gamma) - 2.0 * rbf_mean(x, y, gamma))


def kernel(x: np.ndarray, y: np.ndarray, gamma: float) -> np.ndarray:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    squared = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.exp(-gamma * squared)


class CMMD:
    def __init__(self, card: MetricCard, context: MetricContext) -> None:
        self.card = card
        params = BUILTINS["cmmd"].values(card)
        self.sigma: float = float(params["sigma"])
        self.scale: float = float(params["scale"])
        self.bootstrap_resamples: int = params["bootstrap_resamples"]
        self.coco = CocoImages(context.coco_images.expanduser() if context.coco_images is not None else None, "CMMD")
        self.info = MetricInfo(name=card.name, display_name=card.display_name or "CMMD", version=VERSION,
                               higher_is_better=card.higher_is_better, prompt_set=card.prompt_set,
                               description=card.description)
        self._model: Any = None
        self._size = 0
        self._device = torch.device("cpu")

    @cached_property
    def clip(self) -> ResolvedModel:
        return resolve_model(self.card.model("clip"))

    def fingerprint(self) -> str:
        return self.card.metric_fingerprint(VERSION, clip=self.clip.fingerprint, sigma=self.sigma, scale=self.scale,
                                            preprocess=PREPROCESS)

    def models_used(self) -> dict[str, dict[str, str]]:
        return {"clip": self.clip.record()}

    def setup(self, device: torch.device) -> None:
        if self._model is not None and self._device == device:
            return
        if self._model is None:
            self._model = load_clip_vision(self.clip.folder)
            self._size = int(self._model.config.image_size)
        self._model = self._model.to(device)
        self._device = device

    def embed(self, pixels: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            embeds = self._model(pixel_values=pixels.to(self._device)).image_embeds.float()
        return (embeds / torch.linalg.vector_norm(embeds, dim=-1, keepdim=True)).cpu().numpy()

    def prepare(self, item: ImageItem, image: Image.Image) -> dict[str, Any]:
        if not self._size:
            raise RuntimeError("CMMD.setup() must run before prepare()")
        return {"pixels": cmmd_pixels(image, self._size), "coco_file": self.coco.coco_file(item)}

    def score_batch(self, items: Sequence[ImageItem], prepared: Sequence[dict[str, Any]]) -> list[list[Record]]:
        embeds = self.embed(torch.stack([p["pixels"] for p in prepared]))
        return [[{"features": fid_stats.encode_features(e), "coco_file": p["coco_file"]}]
                for e, p in zip(embeds, prepared, strict=True)]

    # -- the reference side ---------------------------------------------------------------
    def preflight(self, prompts: PromptSet) -> None:
        self.coco.preflight(prompts, self.clip.fingerprint)

    def reference(self, coco_files: Sequence[str]) -> tuple[str, np.ndarray]:
        description = {"images": sha256_json(list(coco_files)), "n": len(coco_files), "weights": self.clip.fingerprint,
                       "preprocess": PREPROCESS, "features": "clip-image-embeds-normalised"}
        key, arrays = self.coco.features(description, coco_files, lambda: self._compute_reference(coco_files))
        return key, arrays["features"]

    def _compute_reference(self, coco_files: Sequence[str]) -> np.ndarray:
        self.setup(self._device)
        paths: list[Path] = self.coco.paths(coco_files)
        chunks = []
        for start in range(0, len(paths), REFERENCE_BATCH):
            batch = []
            for path in paths[start:start + REFERENCE_BATCH]:
                with Image.open(path) as image:
                    batch.append(cmmd_pixels(image, self._size))
            chunks.append(self.embed(torch.stack(batch)))
        return np.concatenate(chunks)

    # -- aggregate ------------------------------------------------------------------------
    def _sides(self, records: Sequence[Record]) -> tuple[str, np.ndarray, np.ndarray]:
        fake = np.stack([fid_stats.decode_features(r["features"]) for r in records])
        key, real = self.reference(sorted({str(r["coco_file"]) for r in records}))
        return key, real, fake

    def resampler(self, groups: Sequence[Sequence[Record]]) -> Callable[[np.ndarray], float]:
        """MMD of the images of resampled prompts against the fixed reference: the generated side's kernel
        matrix and its mean kernel to the reference are computed once; a resample is two index means."""
        records = [r for g in groups for r in g]
        if len(records) < 2:
            return lambda indices: math.nan
        _, real, fake = self._sides(records)
        gamma = 1.0 / (2.0 * self.sigma ** 2)
        k_real = rbf_mean(real, real, gamma)
        k_fake = kernel(fake, fake, gamma)
        k_cross = kernel(fake, real, gamma).mean(axis=1)
        starts = np.cumsum([0] + [len(g) for g in groups])
        rows_of = [np.arange(starts[i], starts[i + 1]) for i in range(len(groups))]

        def statistic(indices: np.ndarray) -> float:
            rows = np.concatenate([rows_of[i] for i in indices])
            counts = np.bincount(rows, minlength=len(fake)).astype(np.float64)  # mean of K[rows][:, rows] = cᵀKc/m²
            within = float(counts @ (k_fake @ counts)) / len(rows) ** 2
            return self.scale * (k_real + within - 2.0 * float(k_cross[rows].mean()))

        return statistic

    def aggregate(self, records: Sequence[Record]) -> dict[str, Any]:
        base: dict[str, Any] = {"n": len(records), "sigma": self.sigma, "scale": self.scale}
        if not records:
            return {"value": math.nan, **base}
        key, real, fake = self._sides(records)
        return {"value": mmd(real, fake, self.sigma, self.scale), **base, "n_ref": len(real), "reference": key}
