"""VQAScore (CLIP-FlanT5) against t2v_metrics 3.0's own CLIPT5Model (parity/ref_vqascore.py in .venv-ref) on the
same tiny random checkpoint, tokenizer, CLIP tower and images.

The checkpoint is written by evalkit in the reference's layout and loaded by the reference's own
`from_pretrained`; the tokenizer is a real sentencepiece model (the reference loads it slow, evalkit the
tokenizer.json transformers converts from it). Images: square and non-square both ways (expand2square pads
with the mean colour before CLIP's processor). Prompts of different lengths, so the reference pads its
batch. Compared: the prompt's token ids with the image slot (identical), the answer's ids (identical), and
each pair's score as −log (the mean cross-entropy over [▁Yes, </s>]) to 1e-5, float32 on both sides.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from support import parity_marks, run_reference, score_pairs, write_random_pngs

from evalkit.metrics.clip_t5 import image_token_ids, t5_chat
from evalkit.metrics.registry import create
from evalkit.tiny.clip import build_tiny_clip, write_card, write_clip_processor
from evalkit.tiny.clip_t5 import VOCAB_WORDS, write_clip_t5_checkpoint

pytestmark = parity_marks()

TEXTS = ["a red cube on the table", "two cats", "a photo of a blue dog and a green cat on the red cube",
         "Yes", "an artificial dog"]
SIZES = [(32, 32), (48, 30), (30, 52), (64, 64), (41, 41)]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity-vqascore")
    from evalkit.metrics.clip_t5 import SYSTEM_MSG

    corpus = [SYSTEM_MSG, *TEXTS, 'Does this figure show "x"? Please answer yes or no.', " ".join(VOCAB_WORDS),
              "USER: ASSISTANT: Yes No"] * 3
    tokenizer = tmp / "tokenizer"
    vocab = run_reference("ref_vqascore", {"step": "tokenizer", "folder": str(tokenizer), "corpus": corpus,
                                           "size": 150}, tmp)["vocab_size"]
    vision = write_clip_processor(build_tiny_clip(tmp / "vision", seed=7))
    model = write_clip_t5_checkpoint(tmp / "model", vocab, vision, seed=7)
    paths = write_random_pngs(tmp, SIZES, seed=9)
    images = [str(path) for path in paths]
    reference = run_reference("ref_vqascore", {"step": "score", "model": str(model), "tokenizer": str(tokenizer),
                                               "images": images, "texts": TEXTS, "cache": str(tmp / "hf")}, tmp)
    card = write_card(tmp / "vqascore-tiny.yaml", "vqascore-tiny", "vqascore", "coco-10k",
                      {"model": model, "tokenizer": tokenizer, "vision": vision}, params={"dtype": "float32"})
    metric = create(str(card))
    metric.setup(torch.device("cpu"))
    _, scores = score_pairs(metric, paths, TEXTS)
    return reference, metric, scores


def test_reference_ran_its_slow_tokenizer_in_float32(compared):
    reference, _, _ = compared
    assert reference["slow"] == "T5Tokenizer" and reference["dtype"] == "torch.float32"
    assert reference["versions"]["t2v_metrics"] == "3.0"
    assert reference["bfloat16_on_cpu"] != "ran"  # why evalkit's bfloat16 card runs float32 on CPU


def test_token_ids_equal_the_reference(compared):
    reference, metric, _ = compared
    ours = image_token_ids(t5_chat(metric.question_template.format(TEXTS[0])), metric._scorer.tokenizer)
    assert ours == reference["input_ids"] and ours.count(-200) == 1 and ours.count(1) == 2  # a </s> per chunk
    assert metric._scorer.answer_ids == reference["answer_ids"] and metric._scorer.answer_ids[-1] == 1


def test_scores_equal_the_reference(compared):
    reference, _, scores = compared
    ours = [-math.log(s) for s in scores]
    theirs = [-math.log(s) for s in reference["scores"]]
    assert np.abs(np.array(ours) - np.array(theirs)).max() <= 1e-5
    assert len({round(s, 6) for s in ours}) == len(ours)  # the pairs differ: not a comparison of constants
