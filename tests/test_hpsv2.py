"""HPSv2 on plain open_clip: parity with the reference computation, batching, the pins, errors.

The parity proxy (until the hpsv2 package runs in the reference environment) is written here
from hpsv2/img_score.py (`score`) and hpsv2/src/open_clip/transform.py (`image_transform`,
`ResizeMaxSize`): ToTensor → bicubic resize of the tensor, longest side to the model size,
`round(side * scale)`, no antialiasing (torchvision < 0.17 for tensors) — done here with
torch.nn.functional.interpolate, not torchvision — → zero pad (floor left/top) → CLIP Normalize,
then the model's own encode_image/encode_text, normalised, one image per forward.
"""

from __future__ import annotations

import dataclasses
import datetime
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from support import direct_item, score_directly

from evalkit.errors import EXIT_USAGE, EvalkitError
from evalkit.metrics.api import ImageItem
from evalkit.metrics.cards import read_card
from evalkit.metrics.context import NO_INPUTS
from evalkit.metrics.hpsv2 import HPSv2, build_open_clip
from evalkit.runtime.datafiles import shipped_dir
from evalkit.tiny.hpsv2 import tiny_config, write_tiny_card, write_tiny_checkpoint

MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(3, 1, 1)
STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(3, 1, 1)
PROMPTS = ["a red dog", "two cats sitting on the table", "A man with a blue bus in the street!", "pizza",
           "a woman standing under a green tree, photo", "food on a plate", "a photo of " + "very " * 90 + "long"]
SIZES = [(48, 40), (32, 32), (64, 80), (37, 91), (100, 33), (96, 96), (20, 16)]  # (width, height)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("hps"), version="v2.1", seed=0, dtype=torch.float16)


def _metric(tmp_path, weights, **kwargs):
    card = write_tiny_card(tmp_path / f"hps-{len(list(tmp_path.iterdir()))}.yaml", "hpsv2-tiny", weights.parent,
                           **kwargs)
    return HPSv2(read_card(card), NO_INPUTS)


@pytest.fixture(scope="module")
def metric(weights, tmp_path_factory):
    m = _metric(tmp_path_factory.mktemp("cards"), weights)
    m.setup(torch.device("cpu"))
    return m


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]


def _item(i: int, text: str) -> ImageItem:
    return direct_item(i, text, "tifa-v1.0")


def _score(metric, prompts, images, batch_size):
    return score_directly(metric, prompts, images, batch_size, "tifa-v1.0")


def _reference_pixels(image: Image.Image, size: int, antialias: bool = False) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    h, w = x.shape[1:]
    scale = size / float(max(h, w))
    if scale != 1.0:
        nh, nw = round(h * scale), round(w * scale)
        x = F.interpolate(x[None], size=(nh, nw), mode="bicubic", align_corners=False, antialias=antialias)[0]
        ph, pw = size - nh, size - nw
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0)
    return (x - MEAN) / STD


def _reference_scores(weights, prompts, images, antialias=False):
    import open_clip

    model = build_open_clip(tiny_config())
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True)["state_dict"], strict=True)
    model.eval()
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=77)
    out = []
    for prompt, image in zip(prompts, images, strict=True):
        with torch.no_grad():
            i = model.encode_image(_reference_pixels(image, 32, antialias)[None])
            t = model.encode_text(tokenizer([prompt]))
            i, t = i / i.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
        out.append(float((i @ t.T).diagonal()[0]))
    return out


# --- (1) parity with the reference computation, (2) batching ------------------------------------------------

def test_scores_equal_the_reference_computation(metric, weights, images):
    expected = _reference_scores(weights, PROMPTS, images)
    got = _score(metric, PROMPTS, images, batch_size=7)
    assert np.ptp(expected) > 0.1  # the tiny model is not degenerate: the test can fail
    assert all(set(r[0]) == {"value", "cosine"} and r[0]["value"] == r[0]["cosine"] for r in got)
    assert max(abs(g[0]["value"] - e) for g, e in zip(got, expected, strict=True)) <= 1e-5


def test_preprocessing_pads_the_longest_side_to_the_model_size(metric, images):
    for image in images:
        ours = metric.prepare(_item(0, "x"), image)["pixel_values"]
        assert ours.shape == (3, 32, 32)
        assert float((ours - _reference_pixels(image, 32)).abs().max()) <= 1e-5
    wide = metric.prepare(_item(0, "x"), images[4])["pixel_values"]  # 100x33 → 32x11 (round(10.56)), pad 10 + 11
    pad = ((torch.zeros(3, 1, 1) - MEAN) / STD)
    assert torch.allclose(wide[:, :10], pad.expand(3, 10, 32)) and torch.allclose(wide[:, 21:], pad.expand(3, 11, 32))
    assert not torch.allclose(wide[:, 10:11], pad.expand(3, 1, 32))


def test_batch_of_one_and_of_seven_give_the_same_records(metric, images):
    one, seven = _score(metric, PROMPTS, images, 1), _score(metric, PROMPTS, images, 7)
    assert np.allclose([r[0]["value"] for r in one], [r[0]["value"] for r in seven], atol=1e-6, rtol=0)


def test_long_prompts_keep_the_end_token(metric):
    ids = metric.prepare(_item(0, PROMPTS[-1]), Image.new("RGB", (8, 8)))["input_ids"]
    assert ids.shape == (77,) and int(ids[-1]) == 49407 and int(ids[0]) == 49406


# --- (3) the antialias pin, (4) versions --------------------------------------------------------------------

def test_antialias_changes_downscaled_values_and_the_fingerprint(metric, weights, images, tmp_path):
    on = _metric(tmp_path, weights, antialias=True)
    on.setup(torch.device("cpu"))
    off_values = [r[0]["value"] for r in _score(metric, PROMPTS, images, 7)]
    on_values = [r[0]["value"] for r in _score(on, PROMPTS, images, 7)]
    expected_on = _reference_scores(weights, PROMPTS, images, antialias=True)
    assert max(abs(a - b) for a, b in zip(on_values, expected_on, strict=True)) <= 1e-5
    assert abs(off_values[5] - on_values[5]) > 1e-4  # 96x96 → 32x32 is a downscale
    assert on.fingerprint() != metric.fingerprint()
    card = read_card(write_tiny_card(tmp_path / "no-aa.yaml", "x", weights.parent))
    with pytest.raises(EvalkitError, match=r"must pin params\.antialias"):
        HPSv2(dataclasses.replace(card, params={k: v for k, v in card.params.items() if k != "antialias"}), NO_INPUTS)


def test_versions_have_different_fingerprints_and_files(weights, tmp_path):
    write_tiny_checkpoint(weights.parent, version="v2.0", seed=0, dtype=torch.float16)  # same tensors, v2.0 name
    v20, v21 = _metric(tmp_path, weights, version="v2.0"), _metric(tmp_path, weights, version="v2.1")
    assert v20.checkpoint_path().name == "HPS_v2_compressed.pt" and v21.checkpoint_path().name == weights.name
    assert v20.fingerprint() != v21.fingerprint()
    shipped = {name: read_card(shipped_dir("metrics") / f"{name}.yaml") for name in ("hpsv2", "hpsv2.0")}
    assert {n: (c.params["version"], c.params["file"]) for n, c in shipped.items()} == {
        "hpsv2": ("v2.1", "HPS_v2.1_compressed.pt"), "hpsv2.0": ("v2.0", "HPS_v2_compressed.pt")}
    for card in shipped.values():
        assert (card.implementation, card.prompt_set, card.higher_is_better) == ("hpsv2", "tifa-v1.0", True)
        assert card.params["architecture"] == "ViT-H-14" and card.params["antialias"] is False
        assert card.model("hps").source == "xswu/HPSv2"
    assert shipped["hpsv2"].fingerprint() != shipped["hpsv2.0"].fingerprint()


# --- (5) offline miss, (6) pickles --------------------------------------------------------------------------

def test_missing_checkpoint_offline_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    metric = HPSv2(read_card(shipped_dir("metrics") / "hpsv2.yaml"), NO_INPUTS)
    with pytest.raises(EvalkitError) as caught:
        metric.fingerprint()
    line = caught.value.one_line()
    assert "xswu/HPSv2@main is not in the local Hugging Face cache" in line and "\n" not in line
    assert caught.value.exit_code == EXIT_USAGE
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EvalkitError, match=r"has no HPS_v2\.1_compressed\.pt"):
        _metric(tmp_path, empty / "HPS_v2.1_compressed.pt").fingerprint()


def test_pickles_that_are_not_plain_tensors_are_refused(weights, tmp_path):
    sd = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
    folder = tmp_path / "code"
    folder.mkdir()
    torch.save({"state_dict": sd, "when": datetime.date(2024, 1, 1)}, folder / "HPS_v2.1_compressed.pt")
    metric = _metric(tmp_path, folder / "HPS_v2.1_compressed.pt")
    with pytest.raises(EvalkitError, match=r"cannot be read with torch.load\(weights_only=True\)") as caught:
        metric.setup(torch.device("cpu"))
    assert "\n" not in caught.value.one_line()
    torch.save({"state_dict": {k: v for k, v in sd.items() if k != "logit_scale"}}, folder / "HPS_v2.1_compressed.pt")
    with pytest.raises(EvalkitError, match="does not fit the open_clip model"):
        _metric(tmp_path, folder / "HPS_v2.1_compressed.pt").setup(torch.device("cpu"))


# --- the scoring engine end to end --------------------------------------------------------------------------

def test_score_step_stores_records_and_aggregates(generate, sd_dir, small_sets, tmp_path, weights):
    from evalkit.metrics.registry import create
    from evalkit.scoring.engine import score_step

    card = write_tiny_card(tmp_path / "hps.yaml", "hpsv2-tiny", weights.parent)
    step_dir = generate(sd_dir, small_sets[:1], out=tmp_path / "run", steps=2)[0].step_dir
    result = score_step(step_dir, [create(str(card))], torch.device("cpu"), batch_size=3, quiet=True)[0]
    rows = [json.loads(line) for p in (step_dir / "scores/hpsv2-tiny").glob("*.jsonl")
            for line in p.read_text().splitlines()]
    values = [row["records"][0]["value"] for row in rows]
    assert len(values) == 5 and result.values["n"] == 5
    assert abs(result.values["value"] - sum(values) / 5) <= 1e-9
    assert abs(result.values["stdev"] - float(np.std(values, ddof=1))) <= 1e-9
    assert result.values["hps_version"] == "v2.1" and result.values["scale"] == "cosine"
