"""Seeded percentile bootstrap over prompts, for intervals and for paired comparisons.

Prompts are the unit: the benchmark is a sample of prompts, and the images of one prompt
(several samples, or TIFA's several questions) are not independent of each other. Most
statistics evalkit reports are sum(num) / sum(den) over prompts (a mean over prompts has
den = 1; TIFA's per-element-type accuracy is correct questions / questions), so they are
resampled vectorised. Statistics that are not (FID, KID) pass a function of the resampled
prompt indices, and fewer resamples.

Resample indices come from `numpy.random.default_rng(seed).integers(0, n, (resamples, n))`,
drawn in chunks of rows in order, so the same (seed, n) always gives the same draws and a
paired comparison can apply one draw to two runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

CHUNK_ROWS = 128  # resamples drawn at once: bounds memory at CHUNK_ROWS × n indices


@dataclass(frozen=True)
class BootstrapSpec:
    resamples: int = 1000
    seed: int = 0
    level: float = 0.95

    def describe(self, unit: str = "prompt") -> dict[str, object]:
        return {"method": "percentile", "unit": unit, "resamples": self.resamples, "seed": self.seed,
                "level": self.level}


def index_chunks(n: int, spec: BootstrapSpec) -> Iterator[np.ndarray]:
    """The resample index matrix in row chunks: (rows, n) ints in [0, n)."""
    rng = np.random.default_rng(spec.seed)
    remaining = spec.resamples
    while remaining > 0:
        rows = min(CHUNK_ROWS, remaining)
        yield rng.integers(0, n, size=(rows, n))
        remaining -= rows


def ratio_samples(num: ArrayLike, den: ArrayLike, spec: BootstrapSpec) -> np.ndarray:
    """sum(num[idx]) / sum(den[idx]) for every resample; NaN where a resample has no denominator."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError(f"num and den must be equal-length vectors (got {num.shape} and {den.shape})")
    if len(num) == 0:
        return np.full(spec.resamples, np.nan)
    out = []
    for idx in index_chunks(len(num), spec):
        d = den[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(d > 0, num[idx].sum(axis=1) / np.where(d > 0, d, 1.0), np.nan))
    return np.concatenate(out)


def function_samples(n: int, statistic: Callable[[np.ndarray], float], spec: BootstrapSpec) -> np.ndarray:
    """statistic(indices) for every resample, for statistics that are not ratios (FID)."""
    if n == 0:
        return np.full(spec.resamples, np.nan)
    return np.array([statistic(row) for idx in index_chunks(n, spec) for row in idx], dtype=np.float64)


def interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the finite samples; NaNs when fewer than two are finite."""
    finite = samples[np.isfinite(samples)]
    if len(finite) < 2:
        return (float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return (float(low), float(high))


def ratio_interval(num: ArrayLike, den: ArrayLike, spec: BootstrapSpec) -> tuple[float, float]:
    return interval(ratio_samples(num, den, spec), spec.level)


def ratio_value(num: ArrayLike, den: ArrayLike) -> float:
    total = float(np.sum(den))
    return float(np.sum(num)) / total if total > 0 else float("nan")


@dataclass(frozen=True)
class PairedDifference:
    """new - base on the same prompts: the observed difference and its bootstrap distribution."""

    difference: float
    ci: tuple[float, float]
    samples: np.ndarray

    def share_above(self, threshold: float) -> float:
        """Share of resamples whose difference exceeds `threshold` (a one-sided bootstrap p-value's complement)."""
        finite = self.samples[np.isfinite(self.samples)]
        return float(np.mean(finite > threshold)) if len(finite) else float("nan")


def paired_ratio_difference(new: tuple[np.ndarray, np.ndarray], base: tuple[np.ndarray, np.ndarray],
                            spec: BootstrapSpec) -> PairedDifference:
    """Both runs resampled with the same prompt indices, so prompt difficulty cancels out."""
    new_num, new_den = (np.asarray(a, dtype=np.float64) for a in new)
    base_num, base_den = (np.asarray(a, dtype=np.float64) for a in base)
    if not (new_num.shape == new_den.shape == base_num.shape == base_den.shape):
        raise ValueError("paired runs must have the same prompts in the same order")
    samples = ratio_samples(new_num, new_den, spec) - ratio_samples(base_num, base_den, spec)
    observed = ratio_value(new_num, new_den) - ratio_value(base_num, base_den)
    return PairedDifference(observed, interval(samples, spec.level), samples)


def paired_function_difference(n: int, new: Callable[[np.ndarray], float], base: Callable[[np.ndarray], float],
                               spec: BootstrapSpec) -> PairedDifference:
    everything = np.arange(n)
    samples = np.array([new(row) - base(row) for idx in index_chunks(n, spec) for row in idx], dtype=np.float64)
    return PairedDifference(new(everything) - base(everything), interval(samples, spec.level), samples)
