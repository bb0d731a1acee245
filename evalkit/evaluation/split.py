"""How several processes share a training folder: whole checkpoints each, or a slice of every one.

Giving each process whole checkpoints (`checkpoints`) loads every checkpoint once and needs no
merge, but the last round is uneven when the checkpoints do not divide among the processes;
giving each a slice of every checkpoint's samples (`samples`) keeps every process busy to the
end but loads every checkpoint in every process. `auto` compares the two wall-clock estimates
below, in units of one image's generation, and is a pure function of the plan's size, so every
process picks the same without talking to the others (the checkpoints counted are all that the
source names, covered or not: what a process skips must not change what the others do).
"""

from __future__ import annotations

from dataclasses import dataclass

LOAD_COST_IMAGES = 16  # loading a checkpoint and warming up ≈ this many images (a 1B-parameter model on a GPU)
CHECKPOINTS, SAMPLES = "checkpoints", "samples"


@dataclass(frozen=True)
class SplitPlan:
    mode: str  # CHECKPOINTS or SAMPLES
    checkpoints_cost: float
    samples_cost: float


def choose(requested: str, checkpoints: int, images_per_checkpoint: int, workers: int) -> SplitPlan:
    """`requested` ("auto", "checkpoints" or "samples") resolved for this plan; estimates in image units."""
    rounds = -(-checkpoints // workers)
    by_checkpoints = rounds * (LOAD_COST_IMAGES + images_per_checkpoint)
    by_samples = checkpoints * (LOAD_COST_IMAGES + -(-images_per_checkpoint // workers))
    if requested == "auto":
        mode = CHECKPOINTS if by_checkpoints <= by_samples and checkpoints > 1 else SAMPLES
    else:
        mode = requested
    return SplitPlan(mode, float(by_checkpoints), float(by_samples))
