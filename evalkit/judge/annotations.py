"""TIFA v1.0's human ratings: 800 images (the 160 TIFA-160 prompts × 5 generators), each rated 1-5 by
two annotators, with the per-image scores the published judges gave them.

This is what a VQA judge is measured against: TIFA's paper reports each VQA model's correlation with
these ratings (mPLUG-large highest), and `evalkit judge` recomputes it. The file ships unchanged from
the reference repository (github.com/Yushi-Hu/tifa, human_annotations/human_annotations_with_scores.json
at 8e37050f, Apache-2.0; LICENSE-NOTE.txt beside it) and is refused when its sha256 differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_file
from evalkit.runtime.datafiles import shipped_dir

ANNOTATIONS_FILE = "human_annotations_with_scores.json"
ANNOTATIONS_SHA256 = "1720bb802c3c0821dd56df0d8c20a1214ff5085d7e5d9236a75736b1d39b7b3c"
SOURCE = ("https://github.com/Yushi-Hu/tifa/blob/8e37050f44ab4ee681e4251f3c8a9d4cc86e901e/"
          "human_annotations/human_annotations_with_scores.json")
# The file's judge columns, as the TIFA paper names them (its Table 3 correlations come from these).
PUBLISHED_JUDGES: Mapping[str, str] = MappingProxyType({
    "tifa_mplug-large": "TIFA, mPLUG-large VQA (the reference's default)",
    "tifa_blip2-flant5xl": "TIFA, BLIP-2 FlanT5-XL VQA",
    "tifa_git-large": "TIFA, GIT-large VQA",
    "tifa_ofa-large": "TIFA, OFA-large VQA",
    "tifa_vilt": "TIFA, ViLT VQA",
    "clipscore_vitb32": "CLIPScore (ViT-B/32)",
    "spice": "SPICE (caption of the image vs prompt)",
    "meteor": "METEOR (caption vs prompt)",
    "rouge": "ROUGE (caption vs prompt)",
    "bleu": "BLEU (caption vs prompt)",
})


@dataclass(frozen=True)
class AnnotatedImage:
    key: str  # "coco_669925_mini_dalle": prompt id and generator
    prompt_id: str  # a tifa-v1.0 prompt id
    image_path: str  # the file name in the reference's image folder
    text: str
    human: float  # mean of the annotators' 1-5 ratings
    published: Mapping[str, float]  # judge column -> its score of this image


@dataclass(frozen=True)
class Annotations:
    images: list[AnnotatedImage]
    source: str  # the shipped file's upstream URL, or the user's path
    sha256: str


def annotations_dir() -> Path:
    return shipped_dir("metrics") / "judges" / "tifa-v1.0"


def load_annotations(path: Path | None = None) -> Annotations:
    """TIFA's 800 rated images (path None: the shipped file, refused when its sha256 differs), or a
    user's own ratings in the same layout (key -> text_id, image_path, text, human_avg[, judge columns])."""
    shipped = path is None
    path = annotations_dir() / ANNOTATIONS_FILE if path is None else Path(path).expanduser()
    if not path.is_file():
        raise EvalkitError(f"human annotation file {path} is missing",
                           "reinstall evalkit (pip install --force-reinstall evalkit)" if shipped
                           else "pass a JSON file in TIFA's human_annotations layout")
    digest = sha256_file(path)
    if shipped and digest != ANNOTATIONS_SHA256:
        raise EvalkitError(f"{path} is not TIFA's human annotation file (sha256 differs)",
                           f"restore it from {SOURCE}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        images = [AnnotatedImage(key, str(row["text_id"]), str(row["image_path"]), str(row["text"]),
                                 float(row["human_avg"]),
                                 MappingProxyType({j: float(row[j]) for j in PUBLISHED_JUDGES if j in row}))
                  for key, row in doc.items()]
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise EvalkitError(f"{path} is not a human annotation file ({type(e).__name__}: {e})",
                           "each entry needs text_id, image_path, text and a numeric human_avg") from e
    if not images:
        raise EvalkitError(f"{path} rates no image", "pass a file with at least three rated images")
    return Annotations(images, SOURCE if shipped else str(path.resolve()), digest)
