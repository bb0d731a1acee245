"""FID and KID of generated coco-10k images against the matching COCO val2014 images.

Features: the 2048-d pool3 output of torch-fidelity's `FeatureExtractorInceptionV3` (the
2015-12-05 TF Inception port that torchmetrics also uses), loaded from a local weights
file named by the card (`params.weights`; `.pth` loaded with `weights_only=True`, or
`.safetensors`) — never downloaded. The resize to 299 is pinned to torch-fidelity's
TF1-exact bilinear (`resize: tf1-bilinear`; = torchmetrics with `antialias=False`, the
original TF FID), the only policy accepted, and it is part of the fingerprint.

Records: one per generated image, its float32 feature vector stored exactly as base64
little-endian bytes (~11 KB per image), plus its size and COCO file. `aggregate` needs
nothing else: it reads the reference statistics for exactly those COCO files at that
resolution from the cache (`fid_stats`), computing them once when missing — COCO images
from `--coco-images DIR`, shorter side resized (PIL bicubic) and centre-cropped to the
generation resolution, then the same extractor.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_file, sha256_json
from evalkit.metrics import fid_stats
from evalkit.metrics.api import ImageItem, MetricInfo, Record
from evalkit.metrics.cards import MetricCard
from evalkit.metrics.coco_reference import CocoImages
from evalkit.metrics.context import MetricContext
from evalkit.metrics.registry import BUILTINS
from evalkit.prompts.sets import PromptSet

VERSION = "1"
RESIZE_POLICIES = ("tf1-bilinear",)
REFERENCE_PREPROCESS = "pil-bicubic-shorter-side+center-crop"
FEATURES = "inception-2015-12-05-pool3-2048"
REFERENCE_BATCH = 32
WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"


def load_extractor(weights: Path) -> torch.nn.Module:
    """torch-fidelity's Inception with local weights, loaded without unpickling code."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    buffer = io.BytesIO()  # torch-fidelity only takes a path/file; hand it the checked tensors
    torch.save(state, buffer)
    buffer.seek(0)
    return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=buffer)


def reference_image(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """A COCO image resized (shorter side, PIL bicubic) and centre-cropped to (width, height), uint8 CHW."""
    width, height = size
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    scale = max(width / rgb.width, height / rgb.height)
    new = (max(width, round(rgb.width * scale)), max(height, round(rgb.height * scale)))
    resized = rgb.resize(new, Image.Resampling.BICUBIC)
    left, top = (new[0] - width) // 2, (new[1] - height) // 2
    return to_uint8_chw(resized.crop((left, top, left + width, top + height)))


def to_uint8_chw(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1).contiguous()


def fid_label(n: int) -> str:
    return f"FID-{n // 1000}K" if n and n % 1000 == 0 else f"FID-{n}"


class FID:
    def __init__(self, card: MetricCard, context: MetricContext) -> None:
        self.card = card
        # Where the COCO images are (--coco-images); None: only cached reference statistics can be used.
        self.coco_images = context.coco_images.expanduser() if context.coco_images is not None else None
        self.coco = CocoImages(self.coco_images, "FID")
        params = BUILTINS["fid"].values(card)
        self.resize: str = params["resize"]
        if self.resize not in RESIZE_POLICIES:
            raise EvalkitError(f"metric card {card.name!r}: unknown resize policy {self.resize!r}",
                               f"use one of {RESIZE_POLICIES}")
        self.weights = Path(params["weights"]).expanduser()
        self.expected_n: int = params["n"]
        self.label: str = params["label"] if params["label"] is not None else fid_label(self.expected_n)
        self.kid_subsets: int = params["kid_subsets"]
        self.kid_subset_size: int = params["kid_subset_size"]
        self.kid_seed: int = params["kid_seed"]
        # Every resample recomputes a 2048-d Fréchet distance (~1 s on CPU): fewer than the ratio metrics.
        self.bootstrap_resamples: int = params["bootstrap_resamples"]
        self.info = MetricInfo(name=card.name, display_name=card.display_name or self.label, version=VERSION,
                               higher_is_better=card.higher_is_better, prompt_set=card.prompt_set,
                               description=card.description)
        self._weights_sha: str | None = None
        self._reference_roots: dict[str, np.ndarray] = {}
        self._model: torch.nn.Module | None = None
        self._device = torch.device("cpu")

    # -- identity ------------------------------------------------------------------------
    def _weights_hash(self) -> str:
        if self._weights_sha is None:
            if not self.weights.is_file():
                raise EvalkitError(f"Inception weights {self.weights} do not exist",
                                   f"download {WEIGHTS_URL} there, or set params.weights in the metric card")
            self._weights_sha = sha256_file(self.weights)
        return self._weights_sha

    def _versions(self) -> dict[str, str]:
        import torch_fidelity

        return {"torch_fidelity": torch_fidelity.__version__}

    def fingerprint(self) -> str:
        return self.card.metric_fingerprint(VERSION, weights=self._weights_hash(), resize=self.resize,
                                            features=FEATURES, **self._versions())

    def models_used(self) -> dict[str, dict[str, str]]:
        return {"inception": {"source": str(self.weights), "revision": "", "fingerprint": self._weights_hash()}}

    # -- scoring -------------------------------------------------------------------------
    def setup(self, device: torch.device) -> None:
        if self._model is not None and self._device == device:
            return
        self._model = load_extractor(self.weights).to(device).eval()  # kept by this metric object only
        self._device = device

    def _extractor(self) -> torch.nn.Module:
        if self._model is None:
            self.setup(self._device)
        assert self._model is not None
        return self._model

    def features(self, images: torch.Tensor) -> np.ndarray:
        """uint8 N×3×H×W → float32 N×2048 (torch-fidelity's TF1-exact resize to 299 inside)."""
        with torch.inference_mode():
            out = self._extractor()(images.to(self._device))[0]
        return out.float().cpu().numpy()

    def prepare(self, item: ImageItem, image: Image.Image) -> dict[str, Any]:
        return {"pixels": to_uint8_chw(image), "coco_file": self.coco.coco_file(item)}

    def score_batch(self, items: Sequence[ImageItem], prepared: Sequence[dict[str, Any]]) -> list[list[Record]]:
        out: list[np.ndarray | None] = [None] * len(prepared)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(prepared):
            by_size.setdefault(tuple(p["pixels"].shape), []).append(i)
        for indices in by_size.values():
            feats = self.features(torch.stack([prepared[i]["pixels"] for i in indices]))
            for i, f in zip(indices, feats, strict=True):
                out[i] = f
        records = []
        for p, f in zip(prepared, out, strict=True):
            assert f is not None
            records.append([{"features": fid_stats.encode_features(f), "width": int(p["pixels"].shape[2]),
                             "height": int(p["pixels"].shape[1]), "coco_file": p["coco_file"]}])
        return records

    # -- reference statistics ------------------------------------------------------------
    def preflight(self, prompts: PromptSet) -> None:
        self.coco.preflight(prompts, self._weights_hash())

    def reference_description(self, coco_files: Sequence[str], size: tuple[int, int]) -> dict[str, Any]:
        return {"images": sha256_json(list(coco_files)), "n": len(coco_files), "resolution": list(size),
                "weights": self._weights_hash(), "resize": self.resize, "preprocess": REFERENCE_PREPROCESS,
                "features": FEATURES, **self._versions()}

    def reference(self, coco_files: Sequence[str], size: tuple[int, int]) -> tuple[str, dict[str, np.ndarray]]:
        return self.coco.features(self.reference_description(coco_files, size), coco_files,
                                  lambda: self._compute_reference(coco_files, size))

    def _compute_reference(self, coco_files: Sequence[str], size: tuple[int, int]) -> np.ndarray:
        paths = self.coco.paths(coco_files)
        chunks = [self.features(torch.stack([reference_image(p, size) for p in paths[i:i + REFERENCE_BATCH]]))
                  for i in range(0, len(paths), REFERENCE_BATCH)]
        return np.concatenate(chunks)

    # -- aggregate -----------------------------------------------------------------------
    def resampler(self, groups: Sequence[Sequence[Record]]) -> Callable[[np.ndarray], float]:
        """FID of the images of resampled prompts against the fixed reference (KID is not resampled)."""
        records = [r for g in groups for r in g]
        sizes = sorted({(int(r["width"]), int(r["height"])) for r in records})
        if len(records) < 2 or len(sizes) != 1:
            return lambda indices: math.nan
        fake = np.stack([fid_stats.decode_features(r["features"]) for r in records])
        starts = np.cumsum([0] + [len(g) for g in groups])
        rows_of = [np.arange(starts[i], starts[i + 1]) for i in range(len(groups))]
        key, ref = self.reference(sorted({str(r["coco_file"]) for r in records}), sizes[0])
        root = self._reference_root(key, ref)

        def statistic(indices: np.ndarray) -> float:
            rows = np.concatenate([rows_of[i] for i in indices])
            if len(rows) < 2:
                return math.nan
            return fid_stats.frechet_distance_to_features(ref["mu"], ref["sigma"], root, fake[rows])

        return statistic

    def _reference_root(self, key: str, ref: dict[str, Any]) -> np.ndarray:
        """Σ_ref^½, once per reference: every step's aggregate and every resample of `check` share it
        (the same numbers as `frechet_distance`, which computes it on each call)."""
        if key not in self._reference_roots:
            self._reference_roots[key] = fid_stats.sqrt_psd(ref["sigma"])
        return self._reference_roots[key]

    def aggregate(self, records: Sequence[Record]) -> dict[str, Any]:
        n = len(records)
        base: dict[str, Any] = {"n": n, "label": fid_label(n), "expected_n": self.expected_n,
                                "resize": self.resize, "preprocess": REFERENCE_PREPROCESS}
        if n < 2:
            return {"value": math.nan, **base}
        sizes = sorted({(int(r["width"]), int(r["height"])) for r in records})
        if len(sizes) != 1:
            raise EvalkitError(f"FID images have {len(sizes)} different sizes {sizes}",
                               "score one resolution per step folder")
        fake = np.stack([fid_stats.decode_features(r["features"]) for r in records])
        coco_files = sorted({str(r["coco_file"]) for r in records})
        key, ref = self.reference(coco_files, sizes[0])
        mu, sigma = fid_stats.mean_cov(fake)
        fid = fid_stats.frechet_distance_rooted(ref["mu"], ref["sigma"], self._reference_root(key, ref), mu, sigma)
        subset = min(self.kid_subset_size, n, len(coco_files))
        kid, kid_std = (fid_stats.kernel_inception_distance(ref["features"], fake, self.kid_subsets, subset,
                                                            self.kid_seed) if subset >= 2 else (math.nan, math.nan))
        return {"value": fid, "fid": fid, **base, "n_ref": len(coco_files), "resolution": list(sizes[0]),
                "kid": kid, "kid_std": kid_std, "kid_subsets": self.kid_subsets, "kid_subset_size": subset,
                "kid_seed": self.kid_seed, "reference": key}
