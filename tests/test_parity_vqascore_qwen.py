"""VQAScore (qwen2.5-vl) against t2v_metrics 3.0's own Qwen2VLModel (parity/ref_vqascore_qwen.py in .venv-ref)
on the same tiny random Qwen2.5-VL checkpoint, processor and images.

evalkit writes the tiny checkpoint; the reference venv rewrites it in the layout the Qwen2.5-VL Instruct hub
repositories ship (flat config with mrope rope_scaling, hub weight names, flat preprocessor config, the
generation config's repetition_penalty 1.05), and both sides load that folder. The tiny processor works at
8 px (patch 4, merge 2, 256..1024 pixels), so after qwen_vl_utils' resize to multiples of 28 the processor
resizes again — both stages run, on both sides. Compared: qwen_vl_utils' sizes over edge cases (identical),
the first prompt's token ids with the expanded image placeholders (identical), the answer token (identical),
each pair's score to 1e-5 (float32 on both sides), and that the repetition penalty changes the reference's
scores by more than the tolerance (so reproducing it is what makes them equal).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import parity_marks, run_reference, score_pairs, write_random_pngs

from evalkit.metrics.registry import create
from evalkit.metrics.vqascore_qwen import utils_size
from evalkit.tiny.clip import write_card
from evalkit.tiny.qwen_vl import write_tiny_qwen_vl

pytestmark = parity_marks()

TEXTS = ["a red cube on the table", "two cats", "a photo of a blue dog and a green cat on the red cube",
         "Yes", "an artificial dog"]
SIZES = [(64, 64), (96, 60), (60, 104), (128, 128), (41, 41)]  # (width, height)
EDGE_SIZES = [[1, 1], [13, 2000], [27, 27], [28, 28], [41, 41], [42, 70], [512, 512], [1024, 768],
              [5000, 4000], [100, 19999], [3, 7]]  # (height, width)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity-vqascore-qwen")
    model = tmp / "hub"
    run_reference("ref_vqascore_qwen", {"step": "checkpoint", "source": str(write_tiny_qwen_vl(tmp / "tiny", seed=3)),
                                        "folder": str(model)}, tmp)
    paths = write_random_pngs(tmp, SIZES, seed=9)
    images = [str(path) for path in paths]
    reference = run_reference("ref_vqascore_qwen", {"step": "score", "model": str(model), "images": images,
                                                    "texts": TEXTS}, tmp)
    reference["sizes"] = run_reference("ref_vqascore_qwen", {"step": "sizes", "sizes": EDGE_SIZES}, tmp)["sizes"]
    card = write_card(tmp / "vqascore-qwen-tiny.yaml", "vqascore-qwen-tiny", "vqascore", "coco-10k",
                      {"model": model}, params={"backend": "qwen2.5-vl", "dtype": "float32"})
    metric = create(str(card))
    metric.setup(torch.device("cpu"))
    prepared, scores = score_pairs(metric, paths, TEXTS)
    return reference, metric, prepared, scores


def test_reference_ran_as_shipped(compared):
    reference, _, _, _ = compared
    assert reference["versions"]["t2v_metrics"] == "3.0" and reference["versions"]["qwen-vl-utils"] == "0.0.14"
    assert reference["model_class"] == "Qwen2_5_VLForConditionalGeneration" and reference["dtype"] == "torch.float32"
    assert reference["penalty"] == 1.05


def test_image_sizes_equal_qwen_vl_utils(compared):
    reference, _, _, _ = compared
    assert [list(utils_size(h, w)) for h, w in EDGE_SIZES] == reference["sizes"]


def test_prompt_and_answer_tokens_equal_the_reference(compared):
    reference, metric, prepared, _ = compared
    assert prepared[0]["ids"] == reference["input_ids"]
    assert metric._scorer.answer_id == reference["answer_id"]


def test_scores_equal_the_reference(compared):
    reference, _, _, scores = compared
    ours, theirs = np.array(scores), np.array(reference["scores"])
    assert np.abs(ours - theirs).max() <= 1e-5 * theirs.max()
    assert np.abs(np.log(ours) - np.log(theirs)).max() <= 1e-5
    assert len({round(s, 8) for s in scores}) == len(scores)  # the pairs differ: not a comparison of constants
    assert np.abs(np.log(theirs) - np.log(reference["without_penalty"])).max() > 1e-3  # the penalty matters
