"""Parity of evalkit's CLIP score with torchmetrics' `CLIPScore` (torchmetrics 1.9.0), ≤ 1e-4 on the ×100 scale.

The reference (PROTOCOL.md, "CLIP score") is `torchmetrics.multimodal.CLIPScore`, run in the reference
venv `.venv-ref` (transformers 4.55) by `parity/ref_clipscore.py`. This module runs in evalkit's
environment: it writes a tiny random CLIP folder (evalkit.tiny.clip, transformers 5 layout) plus the
`preprocessor_config.json` of a CLIPImageProcessor sized to it (shorter side 32, bicubic, crop 32, CLIP
mean/std — what openai/clip-* ship, scaled down), a few PNGs of different sizes and captions, and
compares evalkit's ClipScore with `scale: torchmetrics` (the clamped mean, per pair and over all pairs)
and `scale: cosine` (per image, against torchmetrics' 100·cos / 100). The folder name contains
"openai" because torchmetrics 1.9 only accepts such names (then CLIPModel/CLIPProcessor.from_pretrained).

Tolerance: 1e-4 on the ×100 scale (1e-6 on the cosine): the two sides differ only in float32 rounding
(separate transformers versions; normalisation done in a different order).

Image sizes avoid one known preprocessing difference: transformers' center_crop takes the offset as
(L - 32) // 2, torchvision's CenterCrop (evalkit, OpenAI CLIP) as round((L - 32) / 2); these disagree by
one pixel when L - 32 ≡ 3 (mod 4) after the resize (e.g. a 35×32 image).

Captions over 77 tokens differ by design: see test_long_caption_differs_by_design.
Skipped as a whole when `.venv-ref/bin/python` does not exist.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import direct_item, parity_marks, run_reference

from evalkit.metrics.cards import read_card
from evalkit.metrics.clip_score import ClipScore
from evalkit.metrics.context import NO_INPUTS
from evalkit.metrics.preprocess import CLIP_MEAN, CLIP_STD
from evalkit.tiny.clip import build_tiny_clip, write_card

TOL_X100 = 1e-4

pytestmark = parity_marks()

# (width, height): down- and upscaling, portrait and landscape, square; none hits the crop-offset case above.
SIZES = [(48, 40), (32, 32), (64, 80), (37, 91), (100, 33), (31, 20)]
CAPTIONS = ["a red dog", "Two cats sitting on the table!", "pizza", "an astronaut riding a horse on mars",
            "A bowl of fruit, with apples & pears.", "the the the"]
LONG = "a very long caption about " + " ".join(["dogs", "and", "cats"] * 40)  # well over 77 tokens


def _run_reference(spec: dict, tmp: Path) -> dict:
    return run_reference("ref_clipscore", spec, tmp, timeout=600)


def _write_preprocessor_config(folder: Path, size: int) -> None:
    """openai/clip-*'s preprocessor_config.json with the tiny model's size (what CLIPProcessor reads)."""
    config = {"image_processor_type": "CLIPImageProcessor", "processor_class": "CLIPProcessor",
              "do_convert_rgb": True, "do_resize": True, "size": {"shortest_edge": size}, "resample": 3,
              "do_center_crop": True, "crop_size": {"height": size, "width": size},
              "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD)}
    (folder / "preprocessor_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity-clip")
    folder = build_tiny_clip(tmp / "openai-tiny-clip", seed=0, image_size=32)
    _write_preprocessor_config(folder, 32)
    rng = np.random.default_rng(0)
    pairs = []
    for i, ((w, h), caption) in enumerate(zip(SIZES, CAPTIONS, strict=True)):
        path = tmp / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        pairs.append({"image": str(path), "caption": caption})
    pairs.append({"image": pairs[0]["image"], "caption": LONG})  # last: the long caption
    reference = _run_reference({"model": str(folder), "pairs": pairs}, tmp)
    metrics = {}
    for scale in ("torchmetrics", "cosine"):
        card = write_card(tmp / f"clip-{scale}.yaml", f"clip-parity-{scale}", "clip_score", "coco-10k",
                          {"clip": folder}, params={"scale": scale})
        metric = ClipScore(read_card(card), NO_INPUTS)
        metric.setup(torch.device("cpu"))
        metrics[scale] = metric
    return metrics, pairs, reference


def _score(metric: ClipScore, pairs: list[dict]) -> tuple[list[dict], list[dict]]:
    items = [direct_item(i, p["caption"], "coco-10k") for i, p in enumerate(pairs)]
    prepared = []
    for item, pair in zip(items, pairs, strict=True):
        with Image.open(pair["image"]) as image:
            prepared.append(metric.prepare(item, image.convert("RGB")))
    return [r[0] for r in metric.score_batch(items, prepared)], prepared


def test_reference_loaded_the_tiny_folder(setup):
    _, _, reference = setup
    assert reference["classes"]["model"] == "CLIPModel"
    assert reference["classes"]["image_processor"].startswith("CLIPImageProcessor")
    assert reference["versions"]["torchmetrics"] == "1.9.0"


def test_preprocessing_and_tokens_equal_the_reference(setup):
    metrics, pairs, reference = setup
    _, prepared = _score(metrics["cosine"], pairs)
    pixel = torch.tensor(reference["pixel_values_0"]).view(3, 32, 32)
    assert (prepared[0]["pixel_values"] - pixel).abs().max().item() <= 1e-5
    for p, ref in zip(prepared[:-1], reference["pairs"][:-1], strict=True):
        n = int(p["attention_mask"].sum())
        assert n < 77
        assert p["input_ids"][:n].tolist() == ref["input_ids"][:n]


def test_scores_equal_torchmetrics_clipscore(setup):
    metrics, pairs, reference = setup
    short, ref_pairs = pairs[:-1], reference["pairs"][:-1]
    cos100 = [r["cos100"] for r in ref_pairs]
    assert np.ptp(cos100) > 5.0, "the tiny model is degenerate: the comparison could not fail"
    assert any(c < 0 for c in cos100) and any(c > 0 for c in cos100)  # the clamp is exercised both ways

    records, _ = _score(metrics["torchmetrics"], short)
    cosine, _ = _score(metrics["cosine"], short)
    diffs = {
        "per-image x100 vs cos100": max(abs(r["value"] - c) for r, c in zip(records, cos100, strict=True)),
        "cosine x100 vs cos100": max(abs(100 * r["value"] - c) for r, c in zip(cosine, cos100, strict=True)),
        "pair alone (clamped)": max(abs(metrics["torchmetrics"].aggregate([r])["value"] - ref["score"])
                                    for r, ref in zip(records, ref_pairs, strict=True)),
    }
    # The reference's aggregate ran over all pairs, the long one included: evalkit aggregates the same
    # per-image values, with the long caption's value taken from the reference (it differs by design).
    everything = [*records, {"value": reference["pairs"][-1]["cos100"]}]
    diffs["aggregate (clamped mean)"] = abs(metrics["torchmetrics"].aggregate(everything)["value"]
                                            - reference["score"])
    diffs["batched vs single (reference)"] = max(abs(a - b) for a, b in
                                                 zip(reference["cos100_batched"], [r["cos100"] for r in
                                                                                   reference["pairs"]], strict=True))
    print(f"CLIP score max |evalkit - torchmetrics| (x100 scale): {diffs}")
    assert max(diffs.values()) <= TOL_X100, diffs


def test_long_caption_differs_by_design(setup):
    """Deliberate difference for captions over 77 tokens (PROTOCOL.md, "CLIP score").

    torchmetrics tokenizes without truncation and then slices input_ids to the first 77 tokens, which
    drops the end-of-text token; CLIP's text model pools at the first end-of-text token, and with none
    present transformers' argmax picks position 0 (the start token), so the caption's embedding no longer
    depends on its words. evalkit truncates with the tokenizer (truncation=True, max_length=77), which keeps
    the end-of-text token at position 76 and pools there — what open_clip and OpenAI CLIP do. The first 76
    tokens agree; the scores must differ.
    """
    metrics, pairs, reference = setup
    ref = reference["pairs"][-1]
    records, prepared = _score(metrics["torchmetrics"], pairs[-1:])
    eos = metrics["torchmetrics"]._tokenizer.eos_token_id
    ids = prepared[0]["input_ids"].tolist()
    assert len(ref["input_ids"]) == 77 and eos not in ref["input_ids"]  # sliced: no end token
    assert len(ids) == 77 and ids[-1] == eos and int(prepared[0]["attention_mask"].sum()) == 77  # kept
    assert ids[:76] == ref["input_ids"][:76]
    diff = abs(records[0]["value"] - ref["cos100"])
    print(f"long caption: evalkit {records[0]['value']:.4f} vs torchmetrics {ref['cos100']:.4f} (x100)")
    assert diff > 100 * TOL_X100, diff
