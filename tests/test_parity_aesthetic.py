"""LAION aesthetic score against the authors' simple_inference.py steps (parity/ref_aesthetic.py: OpenAI CLIP's
vision tower and preprocess from openai-clip, the packaged MLP, in .venv-ref) on the same tiny random CLIP,
the same random head and the same PNGs.

Images: square (generated), larger and smaller than the model input, and non-square with odd crop excess
(OpenAI's preprocess is torchvision's: rounded offsets). evalkit scores all of them in one batch; the
reference one at a time. Scores and normalised embeddings agree to 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from support import parity_marks, run_reference, write_random_pngs

from evalkit.metrics.api import ImageItem
from evalkit.metrics.registry import create
from evalkit.prompts.sets import Prompt
from evalkit.tiny.clip import write_card, write_tiny_aesthetic

pytestmark = parity_marks()

ATOL = 1e-5
SIZES = [(32, 32), (64, 64), (57, 40), (40, 57), (24, 24), (33, 70)]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity-aesthetic")
    clip, head = write_tiny_aesthetic(tmp / "aesthetic", seed=2)
    paths = write_random_pngs(tmp, SIZES, seed=6)
    reference = run_reference("ref_aesthetic", {"clip": str(clip), "head": str(head),
                                                "images": [str(p) for p in paths]}, tmp)
    card = write_card(tmp / "aesthetic-tiny.yaml", "aesthetic-tiny", "aesthetic", "coco-10k", {"clip": clip},
                      params={"head": str(head)})
    metric = create(str(card))
    metric.setup(torch.device("cpu"))
    items, prepared = [], []
    for k, path in enumerate(paths):
        items.append(ImageItem("coco-10k", Prompt("p", "unused"), k, path.name, path, ""))
        with Image.open(path) as image:
            prepared.append(metric.prepare(items[-1], image.convert("RGB")))
    return reference, [r[0]["value"] for r in metric.score_batch(items, prepared)]


def test_scores_equal_the_authors_inference(compared):
    reference, ours = compared
    assert np.abs(np.array(ours) - np.array(reference["scores"])).max() <= ATOL
    assert np.std(ours) > 1e-3  # the random head separates the images: the comparison is not of constants


def test_reference_versions(compared):
    reference, _ = compared
    assert reference["versions"]["openai-clip"] == "1.0.1"
    assert reference["versions"]["simple-aesthetics-predictor"] == "0.1.2"
