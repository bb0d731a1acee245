"""Score TIFA's human-annotated images with a TIFA card, so its agreement with the ratings can be set
beside the published judges'.

The images are the reference's (the annotations' README links them; `--images DIR` holds them under
the file names the annotation file gives). Each is scored through the metric's own plugin contract
(prepare, score_batch), and its per-image score is the one the site shows: the metric's record view
over its records (for TIFA, the share of its questions answered correctly, which is the published
judges' per-image column too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from evalkit.errors import EvalkitError
from evalkit.judge.annotations import AnnotatedImage
from evalkit.metrics.api import ImageItem, Metric, RecordViewed
from evalkit.options import DEFAULTS
from evalkit.results.recordview import RecordView

if TYPE_CHECKING:
    import torch

JUDGED_SET = "tifa-v1.0"  # the annotated prompts are TIFA v1.0 prompts (its TIFA-160 subset)


@dataclass(frozen=True)
class JudgedImage:
    image: AnnotatedImage
    score: float


def image_items(images: Path, annotated: Sequence[AnnotatedImage]) -> list[ImageItem]:
    """One item per annotated image, refusing (one line) a missing image or a prompt whose text differs."""
    from evalkit.fileio.hashing import sha256_file
    from evalkit.prompts.sets import load_prompt_set

    prompts = load_prompt_set(JUDGED_SET)
    missing = [a.image_path for a in annotated if not (images / a.image_path).is_file()]
    if missing:
        raise EvalkitError(f"{len(missing)} of the {len(annotated)} annotated images are not in {images} "
                           f"(first: {missing[0]})", "download TIFA's annotated images (see the annotations' "
                           "README) into that folder, under the file names the annotation file gives")
    items = []
    for a in annotated:
        prompt = prompts.by_id(a.prompt_id)
        if prompt.text.strip() != a.text.strip():
            raise EvalkitError(f"annotated image {a.key}: its prompt text differs from {JUDGED_SET}'s {a.prompt_id}",
                               "use TIFA's annotation file unchanged")
        path = images / a.image_path
        items.append(ImageItem(JUDGED_SET, prompt, 0, a.image_path, path, sha256_file(path)))
    return items


def score_images(metric: Metric, items: Sequence[ImageItem], annotated: Sequence[AnnotatedImage],
                 device: torch.device, batch_size: int = DEFAULTS.score_batch_size) -> list[JudgedImage]:
    """Each annotated image's per-image score under `metric` (set up on `device`), in order."""
    from PIL import Image

    if not metric.info.prompt_set.startswith("tifa"):  # tifa-v1.0 or a part of it (the sample)
        raise EvalkitError(f"metric {metric.info.name!r} scores {metric.info.prompt_set}, not TIFA's prompts",
                           "judge a TIFA card (tifa, tifa-blip2, tifa-qwen2.5vl, or your own)")
    view = metric.record_view if isinstance(metric, RecordViewed) else RecordView()
    metric.setup(device)
    out = []
    for start in range(0, len(items), batch_size):
        batch, rated = items[start:start + batch_size], annotated[start:start + batch_size]
        prepared = []
        for item in batch:
            with Image.open(item.path) as file:
                prepared.append(metric.prepare(item, file.convert("RGB")))
        for rating, records in zip(rated, metric.score_batch(batch, prepared), strict=True):
            found = view.score_of(records)
            if found is None:
                raise EvalkitError(f"{metric.info.name} gave no per-image score for {rating.key}",
                                   f"is {rating.prompt_id} in the card's question file?")
            out.append(JudgedImage(rating, found[0]))
    return out

