"""What a metric may read at run time that is not part of its card: local copies of data.

A card pins everything that changes a metric's numbers; the inputs here only say *where* this
machine keeps data that evalkit checks by content anyway (the TIFA question file by its git blob
hash, COCO images through the FID reference cache's file identity), so they are given per run,
on the command line, and are never part of a fingerprint. Each implementation declares which
of them it reads (`reads` in its registry row); the registry hands it a context holding only
those, so no metric can start depending on a path it did not declare.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MetricContext:
    # --tifa-qa: a local tifa_v1.0_question_answers.json (or its folder); None: the hub dataset.
    tifa_qa: Path | None = None
    # --coco-images: the folder of COCO_val2014_*.jpg, FID's reference images; None: only reference
    # statistics already in the cache can be used.
    coco_images: Path | None = None

    @classmethod
    def from_flags(cls, tifa_qa: str = "", coco_images: str = "") -> MetricContext:
        """From the CLI's --tifa-qa / --coco-images strings ("" means not given)."""
        return cls(tifa_qa=Path(tifa_qa) if tifa_qa else None,
                   coco_images=Path(coco_images) if coco_images else None)

    def only(self, names: Collection[str]) -> MetricContext:
        """This context with every input not in `names` left out (what an implementation declared it reads)."""
        unknown = set(names) - set(input_names())
        if unknown:
            raise ValueError(f"unknown metric context inputs {sorted(unknown)}; known: {input_names()}")
        return dataclasses.replace(self, **{name: None for name in input_names() if name not in names})


def input_names() -> tuple[str, ...]:
    """The inputs a registry row may declare in `reads`."""
    return tuple(f.name for f in dataclasses.fields(MetricContext))


NO_INPUTS = MetricContext()  # frozen: a safe default argument
