"""Which bootstrap a metric's numbers get: chosen once, from what the metric declares it is.

A metric that is a ratio over prompts (`PromptDecomposable`: means over prompts, TIFA) is
resampled vectorised from per-prompt numerators and denominators. Any other metric is a
statistic recomputed per resample of prompt indices: its own `resampler` with its own
`bootstrap_resamples` when it has one (`PromptResamplable`: FID), else a re-aggregation of the
resampled records with GENERIC_RESAMPLES resamples (every resample runs `aggregate`).

run.json's intervals and `check`'s paired comparisons must resample the same way, so both ask
`bootstrap_kind`. `check` reads ratio metrics without loading their models: the per-prompt
sidecar carries ratios exactly when the kind was RATIO at scoring time (`PromptUnits.is_ratio`),
and only the other kinds re-create the metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from evalkit.metrics.api import PromptDecomposable, PromptResamplable, Record

GENERIC_RESAMPLES = 50  # every resample re-aggregates all records: bounded cost


class BootstrapKind(Enum):
    RATIO = "ratio"  # sum(num) / sum(den) over resampled prompts
    RESAMPLED = "resampled"  # the metric's own resampler, card bootstrap_resamples
    GENERIC = "generic"  # aggregate() of the resampled prompts' records


@dataclass(frozen=True)
class PromptStatistic:
    """A statistic of resampled prompt indices and how many resamples it is worth."""

    function: Callable[[np.ndarray], float]
    resamples: int


def bootstrap_kind(metric: Any) -> BootstrapKind:
    if isinstance(metric, PromptDecomposable):
        return BootstrapKind.RATIO
    if isinstance(metric, PromptResamplable):
        return BootstrapKind.RESAMPLED
    return BootstrapKind.GENERIC


def prompt_statistic(metric: Any, groups: Sequence[Sequence[Record]]) -> PromptStatistic:
    """The statistic to resample when the metric's values are not taken as ratios over prompts."""
    if bootstrap_kind(metric) is BootstrapKind.RESAMPLED:
        return PromptStatistic(metric.resampler(groups), int(metric.bootstrap_resamples))

    def reaggregate(indices: np.ndarray) -> float:
        value = metric.aggregate([r for i in indices for r in groups[i]]).get("value", math.nan)
        return float(value) if value is not None else math.nan

    return PromptStatistic(reaggregate, GENERIC_RESAMPLES)
