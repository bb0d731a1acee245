"""PickScore against the authors' published snippet (parity/ref_pickscore.py, transformers 4.55 in .venv-ref)
on the same tiny random CLIP, processor folder and PNGs.

Images: square (the generated case), larger and smaller than the model input, and non-square ones whose
crop excess is odd (the slow CLIPImageProcessor floors the crop offset; torchvision would round). Prompts:
short, and one longer than 77 tokens (truncated keeping end-of-text). evalkit scores every image of every
prompt in one batch; the snippet runs per prompt. Scores agree to 1e-5; the snippet's probabilities are the
softmax of the scores over a prompt's images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import parity_marks, run_reference, write_random_pngs

from evalkit.metrics.api import ImageItem
from evalkit.metrics.registry import create
from evalkit.prompts.sets import Prompt
from evalkit.tiny.clip import write_card, write_tiny_pickscore

pytestmark = parity_marks()

ATOL = 1e-5
SIZES = [(32, 32), (64, 64), (57, 40), (40, 57), (24, 24), (33, 70)]
PROMPTS = ["a red cube on a table", "two cats", " ".join(["a very long prompt about many things"] * 20)]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity-pickscore")
    models = write_tiny_pickscore(tmp / "pick", seed=3)
    paths = write_random_pngs(tmp, SIZES, seed=5)
    groups = [{"prompt": prompt, "images": [str(p) for p in paths[i::2]]} for i, prompt in enumerate(PROMPTS)]
    reference = run_reference("ref_pickscore", {"model": str(models["model"]), "processor": str(models["processor"]),
                                                "groups": groups}, tmp)
    card = write_card(tmp / "pickscore-tiny.yaml", "pickscore-tiny", "pickscore", "coco-10k", models)
    metric = create(str(card))
    metric.setup(torch.device("cpu"))
    items, prepared = [], []
    for g, group in enumerate(groups):
        for k, path in enumerate(group["images"]):
            from PIL import Image

            item = ImageItem("coco-10k", Prompt(str(g), group["prompt"]), k, f"{g}-{k}.png", tmp / path, "")
            with Image.open(path) as image:
                prepared.append(metric.prepare(item, image.convert("RGB")))
            items.append(item)
    records = metric.score_batch(items, prepared)
    ours, start = [], 0
    for group in groups:
        ours.append([r[0] for r in records[start:start + len(group["images"])]])
        start += len(group["images"])
    return reference, ours


def test_reference_ran_the_slow_processor(compared):
    reference, _ = compared
    assert reference["image_processor"] == "CLIPImageProcessor"
    assert reference["versions"]["transformers"].startswith("4.")


def test_scores_equal_the_snippet(compared):
    reference, ours = compared
    for theirs, mine in zip(reference["groups"], ours, strict=True):
        assert np.abs(np.array([r["value"] for r in mine]) - np.array(theirs["scores"])).max() <= ATOL


def test_snippet_probabilities_are_the_softmax_of_the_scores(compared):
    reference, ours = compared
    for theirs, mine in zip(reference["groups"], ours, strict=True):
        probs = torch.softmax(torch.tensor([r["value"] for r in mine], dtype=torch.float64), dim=0).numpy()
        assert np.abs(probs - np.array(theirs["probs"])).max() <= ATOL


def test_scores_are_logit_scale_times_cosine(compared):
    _, ours = compared
    values = [r for group in ours for r in group]
    ratios = {round(r["value"] / r["cosine"], 4) for r in values if abs(r["cosine"]) > 1e-3}
    assert len(ratios) == 1 and ratios.pop() > 1.0  # one logit scale (exp(2.6592) = 14.29 at CLIP's init)
