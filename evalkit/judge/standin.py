"""Stand-in ratings for images nobody rated, so `evalkit demo` runs the judge report on its own output.

The demo's images are new (its tiny random model made them), so no person has rated them. What the
demo shows is the report's machinery end to end: the card scoring images through its own contract, the
correlations and their bootstrap, the Markdown and JSON. The ratings are drawn from a seeded generator
on TIFA's scale (two "annotators" rating 1-5 per image), written in TIFA's human_annotations layout so
they take the path a user's own ratings take, and every output that uses them says STAND-IN.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evalkit.fileio.reports import write_report
from evalkit.judge.annotations import Annotations, load_annotations

STAND_IN_NOTE = ("STAND-IN RATINGS: the bold rows are the demo's own images against random 1-5 ratings "
                 "(no person rated them), so their correlations mean nothing; the other rows are the published "
                 "judges on TIFA's 800 human-rated images.")


@dataclass(frozen=True)
class UnratedImage:
    key: str
    prompt_id: str
    text: str
    image_path: str  # relative to the folder the judge is given


def write_stand_in_ratings(images: Sequence[UnratedImage], path: Path, seed: int = 0) -> Annotations:
    """Random ratings of `images`, written to `path` and read back as any user's ratings are."""
    rng = np.random.default_rng(seed)
    doc = {}
    for image in images:
        scores = [int(s) for s in rng.integers(1, 6, size=2)]
        doc[image.key] = {"text_id": image.prompt_id, "image_path": image.image_path, "text": image.text,
                          "human_scores": scores, "human_avg": sum(scores) / len(scores), "stand_in": True}
    write_report(path, json.dumps(doc, indent=2) + "\n")
    return load_annotations(path)
