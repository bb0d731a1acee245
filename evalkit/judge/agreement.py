"""How well a judge's per-image scores agree with human ratings: Pearson, Spearman and Kendall (tau-b)
correlation, with seeded percentile bootstrap intervals.

The bootstrap resamples prompts, not images: the five images of one prompt share its questions and
its difficulty, so they are not independent (the same unit as every other evalkit interval,
`results.bootstrap`). The point values are plain correlations over all images, as TIFA's paper
computes them (scipy.stats), so its published figures are reproduced exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evalkit.results.bootstrap import BootstrapSpec, function_samples, interval

KINDS = ("pearson", "spearman", "kendall")
DEFAULT_BOOTSTRAP = BootstrapSpec()


@dataclass(frozen=True)
class Correlation:
    value: float
    ci95: tuple[float, float]


@dataclass(frozen=True)
class Agreement:
    """One judge against the human ratings."""

    judge: str
    description: str
    n_images: int
    n_prompts: int
    correlations: dict[str, Correlation]  # KINDS -> value and interval

    def to_json(self) -> dict[str, object]:
        return {"judge": self.judge, "description": self.description, "n_images": self.n_images,
                "n_prompts": self.n_prompts,
                **{k: {"value": c.value, "ci95": list(c.ci95)} for k, c in self.correlations.items()}}


def correlation(kind: str, judge: np.ndarray, human: np.ndarray) -> float:
    """One correlation coefficient; NaN when either side is constant or there are fewer than 3 images."""
    from scipy import stats

    if len(judge) < 3 or np.ptp(judge) == 0 or np.ptp(human) == 0:
        return float("nan")
    if kind == "pearson":
        return float(stats.pearsonr(judge, human)[0])
    if kind == "spearman":
        return float(stats.spearmanr(judge, human)[0])
    if kind == "kendall":
        return float(stats.kendalltau(judge, human)[0])  # tau-b: ties in the 1-5 ratings are common
    raise ValueError(f"unknown correlation {kind!r}")


def agreement(judge: str, description: str, scores: Sequence[float], human: Sequence[float],
              prompts: Sequence[str], spec: BootstrapSpec = DEFAULT_BOOTSTRAP) -> Agreement:
    """`scores[i]` and `human[i]` rate image i, which was made from prompt `prompts[i]`."""
    x, y = np.asarray(scores, dtype=np.float64), np.asarray(human, dtype=np.float64)
    if not (len(x) == len(y) == len(prompts)):
        raise ValueError("scores, human ratings and prompts must have one entry per image")
    order = list(dict.fromkeys(prompts))
    of_image = np.asarray(prompts)
    rows = [np.flatnonzero(of_image == p) for p in order]
    out = {}
    for kind in KINDS:
        def statistic(indices: np.ndarray, kind: str = kind) -> float:
            chosen = np.concatenate([rows[i] for i in indices])
            return correlation(kind, x[chosen], y[chosen])

        out[kind] = Correlation(correlation(kind, x, y),
                                interval(function_samples(len(order), statistic, spec), spec.level))
    return Agreement(judge, description, len(x), len(order), out)
