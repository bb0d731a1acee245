"""ImageReward on transformers' BLIP classes: the converter, parity with the reference forward, batching.

The parity proxy (until the image-reward package runs in the reference environment) is a plain
torch re-implementation of the reference forward written here from ImageReward/ImageReward.py
(`score`), BLIP's vit.py and med.py, run on the ORIGINAL-layout tensors of a tiny random
ImageReward.pt, one image per forward as the reference does.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math

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
from evalkit.metrics.imagereward import ImageReward, check_converted
from evalkit.metrics.imagereward_convert import convert_imagereward, split_state_dict, vision_key
from evalkit.runtime.datafiles import shipped_dir
from evalkit.tiny.clip import write_card
from evalkit.tiny.imagereward import WORDS, TinyImageRewardConfig, write_tiny_original

TINY = TinyImageRewardConfig()
MEAN, STD = 0.16717362830052426, 1.0333394966054072  # ImageReward.__init__ (self.mean, self.std)
PROMPTS = ["a red dog", "two cats sitting on the table", "A man with a blue bus in the street!",
           "pizza", " ".join(WORDS * 2), "a woman standing under a green tree, photo", "food on a plate"]
SIZES = [(48, 40), (32, 32), (64, 80), (37, 91), (100, 33), (40, 40), (64, 48)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imagereward")
    original = write_tiny_original(folder / "original", seed=0)
    converted = convert_imagereward(original.pt, original.med_config, folder / "converted",
                                    tokenizer=original.tokenizer)
    return original, converted


@pytest.fixture(scope="module")
def metric(tiny, tmp_path_factory):
    card = write_card(tmp_path_factory.mktemp("cards") / "ir.yaml", "imagereward-tiny", "imagereward", "coco-10k",
                      {"imagereward": tiny[1]})
    m = ImageReward(read_card(card), NO_INPUTS)
    m.setup(torch.device("cpu"))
    return m


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]


def _item(i: int, text: str) -> ImageItem:
    return direct_item(i, text, "coco-10k")


def _score(metric, prompts, images, batch_size):
    return score_directly(metric, prompts, images, batch_size, "coco-10k")


# --- the reference forward, in plain torch, from the original-layout tensors -----------------------------

def _layer_norm(x, sd, name, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def _linear(x, sd, name):
    return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def _ref_vit(sd, x, heads):
    """BLIP vit.py VisionTransformer.forward (eps 1e-6, pre-norm blocks, final norm)."""
    p = "blip.visual_encoder"
    x = F.conv2d(x, sd[f"{p}.patch_embed.proj.weight"], sd[f"{p}.patch_embed.proj.bias"],
                 stride=sd[f"{p}.patch_embed.proj.weight"].shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([sd[f"{p}.cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + sd[f"{p}.pos_embed"]
    b, n, c = x.shape
    for i in range(TINY.vit_layers):
        blk = f"{p}.blocks.{i}"
        qkv = _linear(_layer_norm(x, sd, f"{blk}.norm1", 1e-6), sd, f"{blk}.attn.qkv")
        q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(dim=-1)
        x = x + _linear((attn @ v).transpose(1, 2).reshape(b, n, c), sd, f"{blk}.attn.proj")
        h = _layer_norm(x, sd, f"{blk}.norm2", 1e-6)
        x = x + _linear(F.gelu(_linear(h, sd, f"{blk}.mlp.fc1")), sd, f"{blk}.mlp.fc2")
    return _layer_norm(x, sd, f"{p}.norm", 1e-6)


def _ref_attention(sd, name, hidden, context, additive_mask, heads):
    """med.py BertSelfAttention + BertSelfOutput (keys/values from `context`)."""
    b, n, c = hidden.shape
    d = c // heads

    def split(t):
        return t.view(t.shape[0], t.shape[1], heads, d).permute(0, 2, 1, 3)

    q = split(_linear(hidden, sd, f"{name}.self.query"))
    k, v = split(_linear(context, sd, f"{name}.self.key")), split(_linear(context, sd, f"{name}.self.value"))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d) + additive_mask
    out = (scores.softmax(dim=-1) @ v).permute(0, 2, 1, 3).reshape(b, n, c)
    return _layer_norm(_linear(out, sd, f"{name}.output.dense") + hidden, sd, f"{name}.output.LayerNorm", 1e-12)


def _ref_bert(sd, med, ids, mask, image_embeds):
    """med.py BertModel.forward(is_decoder=False, mode='multimodal'): -10000 padding mask, ones image mask."""
    p = "blip.text_encoder"
    heads = med["num_attention_heads"]
    x = sd[f"{p}.embeddings.word_embeddings.weight"][ids] + sd[f"{p}.embeddings.position_embeddings.weight"][
        torch.arange(ids.shape[1])]
    x = _layer_norm(x, sd, f"{p}.embeddings.LayerNorm", med["layer_norm_eps"])
    self_mask = (1.0 - mask[:, None, None, :].float()) * -10000.0
    cross_mask = torch.zeros(1, 1, 1, image_embeds.shape[1])  # invert_attention_mask(ones) == 0
    for i in range(med["num_hidden_layers"]):
        layer = f"{p}.encoder.layer.{i}"
        x = _ref_attention(sd, f"{layer}.attention", x, x, self_mask, heads)
        x = _ref_attention(sd, f"{layer}.crossattention", x, image_embeds, cross_mask, heads)
        h = F.gelu(_linear(x, sd, f"{layer}.intermediate.dense"))
        x = _layer_norm(_linear(h, sd, f"{layer}.output.dense") + x, sd, f"{layer}.output.LayerNorm", 1e-12)
    return x


def _ref_head(sd, features):
    for index in (0, 2, 4, 6, 7):  # Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear
        features = _linear(features, sd, f"mlp.layers.{index}")
    return features


def _reference(original, prompts, images):
    """ImageReward.score, one (prompt, image) per forward; returns (raw head outputs, rewards)."""
    from transformers import BertTokenizer, CLIPImageProcessorPil

    sd = torch.load(original.pt, map_location="cpu", weights_only=True)
    med = json.loads(original.med_config.read_text())
    tok = BertTokenizer.from_pretrained(str(original.tokenizer))  # init_tokenizer
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    proc = CLIPImageProcessorPil(size={"shortest_edge": TINY.image_size},
                                 crop_size={"height": TINY.image_size, "width": TINY.image_size})
    raws = []
    with torch.no_grad():
        for prompt, image in zip(prompts, images, strict=True):
            text = tok(prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
            pixels = proc(images=image, return_tensors="pt")["pixel_values"]
            hidden = _ref_bert(sd, med, text.input_ids, text.attention_mask, _ref_vit(sd, pixels, TINY.vit_heads))
            raws.append(float(_ref_head(sd, hidden[:, 0, :].float()).item()))
    return raws, [(r - MEAN) / STD for r in raws]


# --- (1) the converter ----------------------------------------------------------------------------------

def test_every_original_tensor_lands_in_the_converted_folder(tiny):
    from safetensors.torch import load_file
    from transformers import BlipTextModel, BlipVisionModel

    original, converted = tiny
    sd = torch.load(original.pt, map_location="cpu", weights_only=True)
    split = split_state_dict(sd)
    assert len(split.vision) + len(split.text) + len(split.head) + len(split.ignored) == len(sd)
    assert sorted(split.ignored) == ["blip.text_encoder.embeddings.position_ids", "blip.text_proj.bias",
                                     "blip.text_proj.weight", "blip.vision_proj.bias", "blip.vision_proj.weight"]
    _, vinfo = BlipVisionModel.from_pretrained(str(converted / "vision"), output_loading_info=True)
    _, tinfo = BlipTextModel.from_pretrained(str(converted / "text"), add_pooling_layer=False,
                                             output_loading_info=True)
    for info in (vinfo, tinfo):
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    vision = load_file(str(converted / "vision/model.safetensors"))
    text = load_file(str(converted / "text/model.safetensors"))
    head = load_file(str(converted / "head.safetensors"))
    assert len(vision) + len(text) + len(head) + len(split.ignored) == len(sd)
    for key, tensor in sd.items():
        if key.startswith("blip.visual_encoder."):
            assert torch.equal(vision[vision_key(key.removeprefix("blip.visual_encoder."))], tensor), key
        elif key.startswith("blip.text_encoder.") and key not in split.ignored:
            assert torch.equal(text[key.removeprefix("blip.text_encoder.")], tensor), key
        elif key.startswith("mlp."):
            assert torch.equal(head[key.removeprefix("mlp.")], tensor), key
    # spot checks of renames written out by hand
    assert torch.equal(vision["encoder.layers.1.self_attn.projection.weight"],
                       sd["blip.visual_encoder.blocks.1.attn.proj.weight"])
    assert torch.equal(vision["embeddings.class_embedding"], sd["blip.visual_encoder.cls_token"])
    assert torch.equal(vision["post_layernorm.bias"], sd["blip.visual_encoder.norm.bias"])
    assert torch.equal(text["encoder.layer.0.crossattention.self.key.weight"],
                       sd["blip.text_encoder.encoder.layer.0.crossattention.self.key.weight"])
    config = json.loads((converted / "text/config.json").read_text())
    assert (config["num_attention_heads"], config["encoder_hidden_size"], config["is_decoder"]) == (2, 128, True)
    assert (config["layer_norm_eps"], config["hidden_act"], config["vocab_size"]) == (1e-12, "gelu", len(text[
        "embeddings.word_embeddings.weight"]))
    assert json.loads((converted / "vision/config.json").read_text())["layer_norm_eps"] == 1e-6


def test_converter_refuses_incomplete_unknown_and_non_tensor_pickles(tiny, tmp_path):
    original, _ = tiny
    sd = torch.load(original.pt, map_location="cpu", weights_only=True)
    for name, broken in {"missing": {k: v for k, v in sd.items() if "blocks.1.mlp.fc2.bias" not in k},
                         "unknown": {**sd, "blip.itm_head.weight": torch.zeros(2)}}.items():
        torch.save(broken, tmp_path / f"{name}.pt")
        with pytest.raises(ValueError, match=r"missing \['encoder.layers.1.mlp.fc2.bias'\]|unknown keys"):
            convert_imagereward(tmp_path / f"{name}.pt", original.med_config, tmp_path / name,
                                tokenizer=original.tokenizer)
        assert not (tmp_path / name).exists()
    torch.save({"a": torch.zeros(1), "when": datetime.date(2024, 1, 1)}, tmp_path / "code.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        convert_imagereward(tmp_path / "code.pt", original.med_config, tmp_path / "code", tokenizer=original.tokenizer)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError):
        convert_imagereward(original.pt, original.med_config, tmp_path / "full", tokenizer=original.tokenizer)


def test_tensors_sharing_storage_in_the_pickle_convert(tiny, tmp_path):
    from safetensors.torch import load_file

    original, _ = tiny
    sd = torch.load(original.pt, map_location="cpu", weights_only=True)
    key, other = "blip.visual_encoder.blocks.0.attn.qkv.bias", "blip.visual_encoder.blocks.0.attn.proj.bias"
    backing = torch.cat([sd[key], sd[other]])
    n = sd[key].numel()
    sd[key], sd[other] = backing[:n], backing[n:]  # two views of one storage, as fused buffers may be saved
    tied = "blip.visual_encoder.blocks.1.norm2.weight"
    sd[tied] = sd["blip.visual_encoder.blocks.1.norm1.weight"]  # one tensor under two names
    torch.save(sd, tmp_path / "views.pt")
    out = convert_imagereward(tmp_path / "views.pt", original.med_config, tmp_path / "out",
                              tokenizer=original.tokenizer)
    vision = load_file(str(out / "vision/model.safetensors"))
    assert torch.equal(vision["encoder.layers.0.self_attn.qkv.bias"], sd[key])
    assert torch.equal(vision["encoder.layers.0.self_attn.projection.bias"], sd[other])
    assert torch.equal(vision["encoder.layers.1.layer_norm2.weight"], vision["encoder.layers.1.layer_norm1.weight"])


def test_conversion_is_reproducible_so_the_fingerprint_is(tiny, tmp_path):
    original, converted = tiny
    again = convert_imagereward(original.pt, original.med_config, tmp_path / "again", tokenizer=original.tokenizer)

    def hashes(folder):
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    assert hashes(again) == hashes(converted)


# --- (2) parity with the reference forward, (5) the normalisation -----------------------------------------

def test_rewards_equal_the_reference_forward(tiny, metric, images):
    _, expected = _reference(tiny[0], PROMPTS, images)
    got = [r[0]["value"] for r in _score(metric, PROMPTS, images, batch_size=7)]
    assert np.ptp(expected) > 0.1  # the tiny model is not degenerate: the test can fail
    assert max(abs(g - e) for g, e in zip(got, expected, strict=True)) <= 1e-5


def test_the_normalisation_constants_are_applied(tiny, metric, images):
    from evalkit.metrics import imagereward as ir

    assert (ir.REWARD_MEAN, ir.REWARD_STD) == (MEAN, STD)
    raws, _ = _reference(tiny[0], PROMPTS[:3], images[:3])
    prepared = [metric.prepare(_item(i, p), im) for i, (p, im) in enumerate(zip(PROMPTS[:3], images[:3], strict=True))]
    batch = {k: torch.stack([p[k] for p in prepared]) for k in prepared[0]}
    with torch.no_grad():
        raw_ours = metric._model.raw(batch["pixel_values"], batch["input_ids"], batch["attention_mask"]).tolist()
    values = [r[0]["value"] for r in metric.score_batch([_item(0, "")] * 3, prepared)]
    for raw, ours, value in zip(raws, raw_ours, values, strict=True):
        assert abs(raw - ours) <= 1e-5
        assert abs(value - (raw - 0.16717362830052426) / 1.0333394966054072) <= 1e-5
        assert abs(value - raw) > 0.01


# --- (3) batching, (4) truncation ------------------------------------------------------------------------

def test_batch_of_one_and_of_seven_give_the_same_records(metric, images):
    one, seven = _score(metric, PROMPTS, images, 1), _score(metric, PROMPTS, images, 7)
    assert [list(r[0]) for r in one] == [["value"]] * 7 == [list(r[0]) for r in seven]
    assert np.allclose([r[0]["value"] for r in one], [r[0]["value"] for r in seven], atol=1e-6, rtol=0)


def test_long_prompts_are_truncated_at_35_tokens_like_the_reference(metric, images):
    from evalkit.tiny.imagereward import tokenizer_tokens

    vocab = {t: i for i, t in enumerate(tokenizer_tokens())}
    words = [WORDS[i % len(WORDS)] for i in range(50)]
    long = " ".join(words)
    tail = " ".join(words[:33] + ["pizza"] * 17)
    inside = " ".join([*words[:30], "pizza", *words[31:]])
    prepared = metric.prepare(_item(0, long), images[0])
    expected = [vocab["[CLS]"], *(vocab[w] for w in words[:33]), vocab["[SEP]"]]
    assert prepared["input_ids"].tolist() == expected  # first token stays [CLS]: score() does not set [ENC]
    assert prepared["attention_mask"].tolist() == [1] * 35
    short = metric.prepare(_item(0, "a dog"), images[0])
    assert short["input_ids"].tolist() == [vocab["[CLS]"], vocab["a"], vocab["dog"], vocab["[SEP]"]] + [0] * 31
    assert short["attention_mask"].tolist() == [1] * 4 + [0] * 31
    values = [r[0]["value"] for r in _score(metric, [long, tail, inside], [images[0]] * 3, 3)]
    assert abs(values[0] - values[1]) <= 1e-6  # words after the 33rd never reach the model
    assert abs(values[0] - values[2]) > 1e-4  # but every word before it does


# --- the scoring engine end to end, (6) errors ------------------------------------------------------------

def test_score_step_stores_records_and_aggregates(generate, sd_dir, small_sets, tmp_path, tiny):
    from evalkit.metrics.registry import create
    from evalkit.scoring.engine import score_step

    card = write_card(tmp_path / "ir.yaml", "imagereward-tiny", "imagereward", "coco-10k", {"imagereward": tiny[1]})
    step_dir = generate(sd_dir, small_sets[1:], out=tmp_path / "run", steps=2)[0].step_dir
    result = score_step(step_dir, [create(str(card))], torch.device("cpu"), batch_size=3, quiet=True)[0]
    rows = [json.loads(line) for p in (step_dir / "scores/imagereward-tiny").glob("*.jsonl")
            for line in p.read_text().splitlines()]
    values = [row["records"][0]["value"] for row in rows]
    assert len(values) == 4 and all(row["records"] == [{"value": v}] for row, v in zip(rows, values, strict=True))
    assert result.values["n"] == 4 and abs(result.values["value"] - sum(values) / 4) <= 1e-9
    assert abs(result.values["stdev"] - float(np.std(values, ddof=1))) <= 1e-9
    other = write_card(tmp_path / "ir2.yaml", "imagereward-tiny", "imagereward", "coco-10k",
                       {"imagereward": tiny[1]}, higher_is_better=False)
    assert create(str(other)).fingerprint() != result.fingerprint
    noted = write_card(tmp_path / "ir3.yaml", "imagereward-tiny", "imagereward", "coco-10k",
                       {"imagereward": tiny[1]}, params={"note": "changed"})
    with pytest.raises(EvalkitError, match=r"has unknown param 'note'"):  # ImageReward takes no params
        create(str(noted))


def test_missing_model_offline_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    card = read_card(shipped_dir("metrics") / "imagereward.yaml")
    assert (card.implementation, card.prompt_set, card.higher_is_better) == ("imagereward", "coco-10k", True)
    with pytest.raises(EvalkitError) as caught:
        ImageReward(card, NO_INPUTS).fingerprint()
    line = caught.value.one_line()
    assert "THUDM/ImageReward@main is not in the local Hugging Face cache" in line and "\n" not in line
    assert caught.value.exit_code == EXIT_USAGE


def test_unconverted_folders_say_how_to_convert(tiny, tmp_path, monkeypatch):
    original, _ = tiny
    card = read_card(write_card(tmp_path / "c.yaml", "ir", "imagereward", "coco-10k", {"imagereward": original.folder}))
    with pytest.raises(EvalkitError, match=r"holds the original pickled ImageReward\.pt") as caught:
        ImageReward(card, NO_INPUTS).fingerprint()
    assert "convert_imagereward" in caught.value.one_line() and "\n" not in caught.value.one_line()
    from evalkit.metrics import imagereward as ir

    monkeypatch.setattr(ir, "resolve_hub_snapshot", lambda *a, **k: original.folder)
    with pytest.raises(EvalkitError, match=r"THUDM/ImageReward@main holds the original pickled ImageReward\.pt"):
        ImageReward(read_card(shipped_dir("metrics") / "imagereward.yaml"), NO_INPUTS).fingerprint()
    with pytest.raises(EvalkitError, match=r"missing vision/config\.json"):
        check_converted(tmp_path, "somewhere")
