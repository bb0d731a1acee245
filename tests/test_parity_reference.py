"""Parity with the reference packages themselves (image-reward 1.5, hpsv2 1.2.0), ≤ 1e-5.

The reference packages cannot be installed next to evalkit, so they run in a separate venv,
`.venv-ref` (built by `bash parity/install-reference.sh`, see ENVIRONMENT.md). This module runs in
evalkit's environment: it writes tiny random weights in the OFFICIAL layouts (ImageReward.pt +
med_config.json + a bert-style tokenizer; an HPS `{'state_dict': ...}` checkpoint of a tiny
open_clip config), a few PNGs and prompts (one over ImageReward's 35 tokens, one over CLIP's 77),
runs `parity/ref_imagereward.py` / `parity/ref_hpsv2.py` with `.venv-ref/bin/python` — the
packages' own preprocessing, tokenizer calls and forward code, see their docstrings — and
compares evalkit's metric plugins (ImageReward through its converter) with their output.
Skipped as a whole when `.venv-ref/bin/python` does not exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import direct_item, parity_marks, run_reference, write_random_pngs

from evalkit.metrics.cards import read_card
from evalkit.metrics.context import NO_INPUTS
from evalkit.metrics.hpsv2 import HPSv2
from evalkit.metrics.imagereward import ImageReward
from evalkit.tiny.clip import write_card
from evalkit.tiny.hpsv2 import write_tiny_card
from evalkit.tiny.imagereward import WORDS
from evalkit.tiny.reference import hpsv2_reference_checkpoint, hpsv2_reference_spec, imagereward_reference

TOL = 1e-5

pytestmark = parity_marks()

# The tiny checkpoints and the specs the reference scripts read: evalkit/tiny/reference.py (shared with
# bench/package_baselines.py, which times the packages on the same weights).
LONG_35 = " ".join(WORDS * 2)  # 52 words: truncated at 35 tokens by ImageReward
LONG_77 = " ".join(WORDS * 4)  # 104 words: truncated at 77 tokens by CLIP, end token kept
PROMPTS = ["a red dog", "Two cats sitting on the table!", LONG_35, LONG_77, "pizza"]
SIZES = [(48, 40), (32, 32), (64, 80), (37, 91), (100, 33), (31, 20)]  # (width, height)


def _run_reference(script: str, spec: dict, tmp: Path) -> dict:
    return run_reference(script, spec, tmp)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return write_random_pngs(tmp_path_factory.mktemp("parity-images"), SIZES)


def _cases(images: list[Path]) -> list[dict]:
    """Each prompt with a few images (rotating), so both per-image and per-prompt-list paths run."""
    return [{"prompt": p, "images": [str(images[(i + j) % len(images)]) for j in range(3)]}
            for i, p in enumerate(PROMPTS)]


def _evalkit_scores(metric, cases: list[dict], prompt_set: str) -> list[list[float]]:
    out = []
    for c, case in enumerate(cases):
        items = [direct_item(c * 10 + j, case["prompt"], prompt_set) for j in range(len(case["images"]))]
        prepared = []
        for item, path in zip(items, case["images"], strict=True):
            with Image.open(path) as image:
                prepared.append(metric.prepare(item, image.convert("RGB")))
        out.append([r[0]["value"] for r in metric.score_batch(items, prepared)])
    return out


def _max_diff(got: list[list[float]], expected: list[list[float]]) -> float:
    return max(abs(g - e) for gs, es in zip(got, expected, strict=True) for g, e in zip(gs, es, strict=True))


# --- ImageReward -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def imagereward(tmp_path_factory, images):
    folder = tmp_path_factory.mktemp("parity-ir")
    built = imagereward_reference(folder, seed=0)
    spec = {**built.spec, "cases": _cases(images)}
    reference = _run_reference("ref_imagereward", spec, folder)
    card = write_card(folder / "ir.yaml", "imagereward-parity", "imagereward", "coco-10k",
                      {"imagereward": built.converted})
    metric = ImageReward(read_card(card), NO_INPUTS)
    metric.setup(torch.device("cpu"))
    return metric, spec, reference


def test_imagereward_reference_loaded_every_weight(imagereward):
    _, _, reference = imagereward
    assert reference["load"]["missing"] == []
    assert reference["load"]["unexpected"] == []


def test_imagereward_tokens_equal_the_reference_tokenizer(imagereward):
    metric, spec, reference = imagereward
    for case, ref in zip(spec["cases"], reference["cases"], strict=True):
        item = direct_item(0, case["prompt"], "coco-10k")
        with Image.open(case["images"][0]) as image:
            prepared = metric.prepare(item, image.convert("RGB"))
        assert prepared["input_ids"].tolist() == ref["input_ids"]
        assert prepared["attention_mask"].tolist() == ref["attention_mask"]
    assert sum(reference["cases"][PROMPTS.index(LONG_35)]["attention_mask"]) == 35  # truncated


def test_imagereward_scores_equal_the_reference_package(imagereward):
    metric, spec, reference = imagereward
    got = _evalkit_scores(metric, spec["cases"], "coco-10k")
    single = [ref["score"] for ref in reference["cases"]]
    ranked = [ref["rank_rewards"] for ref in reference["cases"]]
    listed = [ref["score_list"] for ref in reference["cases"]]
    flat = [v for vs in single for v in vs]
    assert np.ptp(flat) > 0.1, "the tiny model is degenerate: the comparison could not fail"
    diffs = {"score": _max_diff(got, single), "inference_rank": _max_diff(got, ranked),
             "score(list)": _max_diff(got, listed)}
    print(f"ImageReward max |evalkit - reference|: {diffs}")
    assert max(diffs.values()) <= TOL, diffs


# --- HPSv2 -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hps_weights(tmp_path_factory) -> Path:
    # float16, as the official *_compressed.pt files; both sides load it into float32 modules.
    return hpsv2_reference_checkpoint(tmp_path_factory.mktemp("parity-hps"), seed=0)


@pytest.mark.parametrize("antialias", [False, True])
def test_hpsv2_scores_equal_the_reference_package(hps_weights, images, tmp_path, antialias):
    """antialias=True: hpsv2 as installed (torchvision ≥ 0.17 antialiases its tensor resize);
    antialias=False: the same code with the resize's antialias off, as under the torchvision the
    published numbers were made with — what evalkit's shipped card pins."""
    cases = _cases(images)
    spec = {**hpsv2_reference_spec(hps_weights, antialias), "cases": cases}
    reference = _run_reference("ref_hpsv2", spec, tmp_path)
    card = write_tiny_card(tmp_path / "hps.yaml", "hpsv2-parity", hps_weights.parent, version="v2.1",
                           antialias=antialias)
    metric = HPSv2(read_card(card), NO_INPUTS)
    metric.setup(torch.device("cpu"))
    expected = [ref["score"] for ref in reference["cases"]]
    got = _evalkit_scores(metric, cases, "tifa-v1.0")
    assert np.ptp([v for vs in expected for v in vs]) > 0.1, "the tiny model is degenerate"
    for ref in reference["cases"]:
        assert ref["score_first_alone"] == pytest.approx(ref["score"][0], abs=1e-6)
    long_ids = reference["cases"][PROMPTS.index(LONG_77)]["input_ids"]
    assert len(long_ids) == 77 and long_ids[-1] != 0  # truncated, the end token kept
    diff = _max_diff(got, expected)
    print(f"HPSv2 (antialias={antialias}) max |evalkit - reference|: {diff:.3g}")
    assert diff <= TOL, diff
