"""FID / KID math and the cached reference statistics (per docs PROTOCOL.md, FID / KID).

Everything here is float64: mean and covariance with N−1, the Fréchet distance with the
trace of the matrix square root taken as Σ sqrt(eigvalsh(√Σ₁ Σ₂ √Σ₁)) (symmetric PSD, so
`eigh` is stable; eigenvalues at rounding-noise level are zeroed, see `_clean`), and KID as the unbiased MMD² of
the cubic polynomial kernel (x·y/d + 1)³ averaged over seeded random subsets (torchmetrics'
defaults: 100 subsets of 1000; the same subset draw order as torchmetrics).

Reference statistics are a named artifact: `<cache>/fid-refs/<key>.npz` holds the
reference features (float32, needed by KID) and their float64 mean and covariance, and
`<key>.json` what made them. The key hashes everything that changes them.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.fileio.hashing import sha256_json

FEATURE_DTYPE = "<f4"  # records store the extractor's float32 output exactly (little-endian, base64)
REF_SCHEMA = "evalkit.fid-reference/1"


def encode_features(vector: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vector, dtype=FEATURE_DTYPE).tobytes()).decode("ascii")


def decode_features(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=FEATURE_DTYPE)


def mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (N−1) in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.shape[0] < 2:
        raise ValueError("FID needs at least two samples per side")
    mu = x.mean(axis=0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def _clean(values: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with rounding noise (|λ| < λmax·d·eps, incl. negatives) set to 0.

    Rank-deficient covariances (N ≤ d) otherwise add d·sqrt(noise) to the trace term."""
    floor = max(float(values.max(initial=0.0)), 0.0) * values.shape[0] * np.finfo(np.float64).eps
    return np.where(values > floor, values, 0.0)


def sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(_clean(values))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ₁−μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr (Σ₁Σ₂)^½, float64."""
    return frechet_distance_rooted(mu1, sigma1, sqrt_psd(sigma1), mu2, sigma2)


def frechet_distance_rooted(mu1: np.ndarray, sigma1: np.ndarray, root1: np.ndarray, mu2: np.ndarray,
                            sigma2: np.ndarray) -> float:
    """As frechet_distance with Σ₁^½ given: bootstrap resamples share one reference and its root."""
    inner = root1 @ sigma2 @ root1
    eigen = np.linalg.eigvalsh((inner + inner.T) / 2)
    trace_sqrt = float(np.sqrt(_clean(eigen)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def _poly_mmd(f_real: torch.Tensor, f_fake: torch.Tensor) -> torch.Tensor:
    d = f_real.shape[1]
    k_xx = (f_real @ f_real.T / d + 1) ** 3
    k_yy = (f_fake @ f_fake.T / d + 1) ** 3
    k_xy = (f_real @ f_fake.T / d + 1) ** 3
    m = k_xx.shape[0]
    kt_xx = k_xx.sum() - torch.diagonal(k_xx).sum()
    kt_yy = k_yy.sum() - torch.diagonal(k_yy).sum()
    return (kt_xx + kt_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m**2)


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, subsets: int, subset_size: int,
                              seed: int) -> tuple[float, float]:
    """Mean and population std of the unbiased polynomial-kernel MMD² over seeded subsets.

    Subsets are drawn like torchmetrics' KernelInceptionDistance (randperm of the real, then
    of the fake features, per subset) from a CPU generator seeded with `seed`.
    """
    generator = torch.Generator().manual_seed(seed)
    r = torch.from_numpy(np.asarray(real, dtype=np.float64))
    f = torch.from_numpy(np.asarray(fake, dtype=np.float64))
    scores = []
    for _ in range(subsets):
        pr = torch.randperm(r.shape[0], generator=generator)[:subset_size]
        pf = torch.randperm(f.shape[0], generator=generator)[:subset_size]
        scores.append(_poly_mmd(r[pr], f[pf]))
    values = torch.stack(scores)
    return float(values.mean()), float(values.std(unbiased=False))


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evalkit" / "fid-refs"


def reference_key(description: dict[str, Any]) -> str:
    return sha256_json({"schema": REF_SCHEMA, **description})


def load_reference(key: str) -> dict[str, np.ndarray] | None:
    path = cache_root() / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            return {"features": data["features"], "mu": data["mu"], "sigma": data["sigma"]}
    except (OSError, ValueError, KeyError):
        return None  # a damaged artifact is recomputed


def load_reference_meta(key: str) -> dict[str, Any]:
    """What a cached reference was computed from ({} when unreadable: the entry is then recomputed)."""
    try:
        value = json.loads((cache_root() / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def has_reference(images: str, weights: str) -> bool:
    """Whether reference features of these images (`reference_description`'s `images` hash) with
    these Inception weights are cached at any resolution (what a run without --coco-images needs)."""
    root = cache_root()
    for meta in root.glob("*.json") if root.is_dir() else []:
        value = load_reference_meta(meta.stem)
        if value.get("images") == images and value.get("weights") == weights and meta.with_suffix(".npz").is_file():
            return True
    return False


def save_reference(key: str, description: dict[str, Any], features: np.ndarray) -> dict[str, np.ndarray]:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    mu, sigma = mean_cov(features)
    arrays = {"features": np.asarray(features, dtype=np.float32), "mu": mu, "sigma": sigma}
    tmp = root / f".{key}.{os.getpid()}.tmp.npz"
    np.savez(tmp, features=arrays["features"], mu=mu, sigma=sigma)
    os.replace(tmp, root / f"{key}.npz")
    meta = root / f".{key}.{os.getpid()}.tmp.json"
    meta.write_text(json.dumps({"schema": REF_SCHEMA, "key": key, **description}, indent=2, sort_keys=True) + "\n",
                    encoding="utf-8")
    os.replace(meta, root / f"{key}.json")
    return arrays


def frechet_distance_to_features(mu1: np.ndarray, sigma1: np.ndarray, root1: np.ndarray,
                                 features: np.ndarray) -> float:
    """Fréchet distance of raw features to a reference, through the smaller Gram matrix.

    With Y = (X − μ)·Σ₁^½ / √(N−1), Σ₁^½ Σ₂ Σ₁^½ = YᵀY shares its non-zero eigenvalues with
    YYᵀ (N×N), so bootstrap resamples of N ≪ d images cost an N×N eigendecomposition, not d×d.
    """
    x = np.asarray(features, dtype=np.float64)
    n = x.shape[0]
    if n < 2:
        raise ValueError("FID needs at least two samples per side")
    mu2 = x.mean(axis=0)
    centred = x - mu2
    y = centred @ root1 / np.sqrt(n - 1)
    gram = y @ y.T if n < y.shape[1] else y.T @ y
    eigen = np.linalg.eigvalsh((gram + gram.T) / 2)
    trace_sqrt = float(np.sqrt(_clean(eigen)).sum())
    trace2 = float(np.einsum("ij,ij->", centred, centred)) / (n - 1)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + trace2 - 2.0 * trace_sqrt)
