"""mPLUG parity with modelscope's own code (modelscope 1.40.2 in .venv-ref): identical answers, answer
ids and question ids, beam scores and teacher-forced decoder logits within 1e-5 of their range.

Tiny random checkpoints in modelscope's folder layout are built and saved by modelscope itself
(parity/ref_mplug.py), answered there by `pipeline('visual-question-answering', model=folder)` on
the images' paths as TIFA calls it, then converted by evalkit's converter and answered by the
`mplug` backend through its batched answer loop (several images, several questions per call).
Two weight draws: one whose beams end early on [SEP] (the reference's quirk of growing a lower
beam past its [SEP] included), one that runs to max_length; the fusion encoder builds 4 layers and
runs 3, with stride 2 (its joint image-text layer).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from support import parity_marks, run_reference, write_random_pngs

from evalkit.metrics.tifa.mplug_convert import convert_mplug
from evalkit.metrics.tifa.vqa import load_vqa_backend
from evalkit.tiny.mplug import write_modelscope_layout

TOL = 1e-5
pytestmark = parity_marks()

QUESTIONS = [["What is the color of the cat?", "how many dogs are there?", "Is this a photo?"],
             ["is there a man in the image?"],
             ["does the dog have a red ball, or a blue one, in this photo of the man and the white cat on a gray day?",
              "xylophone's 2 keys?"]]
SIZES = [(50, 40), (32, 32), (17, 61)]
MODELS = [{"seed": 0, "std": 0.3, "sep_bias": 8.0, "beam_size": 3, "max_length": 5},
          {"seed": 1, "std": 0.05, "sep_bias": 0.0, "beam_size": 5, "max_length": 10}]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, list[dict], dict]:
    tmp = tmp_path_factory.mktemp("mplug-parity")
    images = write_random_pngs(tmp, SIZES)
    models = []
    for i, m in enumerate(MODELS):
        folder = write_modelscope_layout(tmp / f"model{i}", m["beam_size"], m["max_length"])
        models.append({"folder": str(folder), "seed": m["seed"], "std": m["std"], "sep_bias": m["sep_bias"]})
    spec = {"models": models, "cases": [{"image": str(p), "questions": q} for p, q in zip(images, QUESTIONS,
                                                                                         strict=True)]}
    return tmp, models, run_reference("ref_mplug", spec, tmp)


@pytest.mark.parametrize("index", range(len(MODELS)))
def test_answers_ids_scores_and_logits_equal_modelscopes(reference, index: int) -> None:
    tmp, models, out = reference
    converted = convert_mplug(Path(models[index]["folder"]), tmp / f"converted{index}")
    backend = load_vqa_backend("mplug", converted)
    images = [Image.open(tmp / f"{i}.png") for i in range(len(SIZES))]
    cases = out["models"][index]["cases"]
    assert backend.answer(images, QUESTIONS) == [c["answers"] for c in cases]
    model, saw_early_end, saw_max_length = backend.model, False, False
    for image, questions, case in zip(images, QUESTIONS, cases, strict=True):
        encoded = backend.encode([image])
        prompts = [backend.prompt(encoded, 0, q, ()) for q in questions]
        assert [p + [0] * (25 - len(p)) for p in prompts] == case["question_ids"]
        generated = backend.generate(encoded, [0] * len(prompts), prompts).tolist()
        for row, ids in zip(generated, case["ids"], strict=True):
            assert row[:len(ids)] == ids and not any(row[len(ids):])
            saw_early_end |= ids[-1] == 102 and len(ids) <= MODELS[index]["max_length"]
            saw_max_length |= len(ids) == MODELS[index]["max_length"] + 1
        for prompt, ids, logits in zip(prompts, case["ids"], case["logits"], strict=True):
            memory, mask = model.fuse(encoded, torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long))
            ours, theirs = model.decoder_logits(torch.tensor([ids]), memory, mask)[0], torch.tensor(logits)
            scale = max(1.0, float(theirs.abs().max()))  # float noise grows with the logits' range
            torch.testing.assert_close(ours, theirs, atol=TOL * scale, rtol=0)
    assert saw_early_end if MODELS[index]["sep_bias"] else saw_max_length
    assert out["versions"]["modelscope"] == "1.40.2"


def test_the_beam_scores_are_the_references(reference) -> None:
    """The best hypothesis' length-normalised score, from the same beam search."""
    from evalkit.metrics.tifa.mplug import beam_search

    tmp, models, out = reference
    backend = load_vqa_backend("mplug", convert_mplug(Path(models[0]["folder"]), tmp / "converted-scores"))
    model, config = backend.model, backend.model.config
    image = Image.open(tmp / "0.png")
    encoded = backend.encode([image])
    prompts = [backend.prompt(encoded, 0, q, ()) for q in QUESTIONS[0]]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([p + [0] * (width - len(p)) for p in prompts])
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
    memory, memory_mask = model.fuse(encoded.expand(len(prompts), -1, -1), ids, mask)
    with torch.inference_mode():
        def step(rows: torch.Tensor, prefixes: torch.Tensor) -> torch.Tensor:
            return model.decoder_logits(prefixes, memory[rows], memory_mask[rows])[:, -1]

        beams = beam_search(step, len(prompts), torch.device("cpu"), config.beam_size, config.max_length,
                            config.min_length)
    case = out["models"][0]["cases"][0]
    assert [b.ids for b in beams] == case["ids"]
    for ours, theirs in zip([b.score for b in beams], case["scores"], strict=True):
        assert ours == pytest.approx(theirs, abs=TOL * max(1.0, abs(theirs)))
