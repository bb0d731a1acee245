"""A tiny random ImageReward in the official layout, and its converted folder (tests and demo).

`write_tiny_original` writes what THUDM/ImageReward ships — `ImageReward.pt` (a state dict with
exactly the reference module's keys: `blip.visual_encoder.*` of BLIP's vit.py, `blip.text_encoder.*`
of med.py's BertModel without pooler, `blip.vision_proj`/`blip.text_proj`, `mlp.layers.*`) and
`med_config.json` — plus a small bert-style WordPiece tokenizer standing in for bert-base-uncased.
The tensors are drawn directly in that layout (not via transformers), so a wrong rename in the
converter shows up as a wrong number. The head is drawn with unit-gain weights: ImageReward's
own init (std 1/769, zero bias) makes every score nearly identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
WORDS = ("a", "an", "the", "of", "on", "in", "with", "and", "dog", "cat", "man", "woman", "red", "blue", "green",
         "sitting", "standing", "table", "street", "photo", "two", "bus", "plate", "food", "pizza", "tree")


@dataclass(frozen=True)
class TinyImageRewardConfig:
    """ViT head dim 64 as in BLIP (so the converter's default head count applies); 2 text heads
    (transformers' BlipTextConfig default is 8, so a dropped med_config value would show)."""

    image_size: int = 32
    patch_size: int = 8
    vit_width: int = 128
    vit_layers: int = 2
    vit_heads: int = 2
    text_width: int = 32
    text_layers: int = 2
    text_heads: int = 2
    text_intermediate: int = 64
    max_positions: int = 40
    head_widths: tuple[int, ...] = (32, 24, 16, 8, 4, 1)
    embed_dim: int = 16  # BLIP_Pretrain's vision_proj/text_proj width (unused by the reward)


@dataclass(frozen=True)
class TinyOriginal:
    folder: Path
    pt: Path
    med_config: Path
    tokenizer: Path


def tokenizer_tokens() -> list[str]:
    """Specials first as in bert-base-uncased ([PAD]=0), whole words, then single characters and ##pieces."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *LETTERS, *".,'!?", *(f"##{c}" for c in LETTERS)]
    return list(dict.fromkeys(tokens))


def write_tokenizer(folder: Path) -> Path:
    """A lower-casing BertTokenizer (the stand-in for bert-base-uncased, before [DEC]/[ENC])."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(tokenizer_tokens())}, do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    return folder


def med_config(config: TinyImageRewardConfig, vocab_size: int) -> dict[str, object]:
    """BLIP's med_config.json layout (encoder_width is overwritten with the ViT width by BLIP_Pretrain)."""
    return {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "hidden_size": config.text_width, "initializer_range": 0.02,
            "intermediate_size": config.text_intermediate, "layer_norm_eps": 1e-12,
            "max_position_embeddings": config.max_positions, "model_type": "bert",
            "num_attention_heads": config.text_heads, "num_hidden_layers": config.text_layers, "pad_token_id": 0,
            "type_vocab_size": 2, "vocab_size": vocab_size, "encoder_width": 768, "add_cross_attention": True}


def original_shapes(config: TinyImageRewardConfig, vocab_size: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(key, shape) of every tensor in an ImageReward.pt of this size, in the reference's key layout."""
    v, t = config.vit_width, config.text_width
    grid = config.image_size // config.patch_size
    yield "blip.visual_encoder.cls_token", (1, 1, v)
    yield "blip.visual_encoder.pos_embed", (1, grid * grid + 1, v)
    yield "blip.visual_encoder.patch_embed.proj.weight", (v, 3, config.patch_size, config.patch_size)
    yield "blip.visual_encoder.patch_embed.proj.bias", (v,)
    for i in range(config.vit_layers):
        block = f"blip.visual_encoder.blocks.{i}"
        yield from _linear(f"{block}.attn.qkv", v, 3 * v)
        yield from _linear(f"{block}.attn.proj", v, v)
        yield from _linear(f"{block}.mlp.fc1", v, 4 * v)
        yield from _linear(f"{block}.mlp.fc2", 4 * v, v)
        yield from _norm(f"{block}.norm1", v)
        yield from _norm(f"{block}.norm2", v)
    yield from _norm("blip.visual_encoder.norm", v)
    yield "blip.text_encoder.embeddings.word_embeddings.weight", (vocab_size, t)
    yield "blip.text_encoder.embeddings.position_embeddings.weight", (config.max_positions, t)
    yield from _norm("blip.text_encoder.embeddings.LayerNorm", t)
    for i in range(config.text_layers):
        layer = f"blip.text_encoder.encoder.layer.{i}"
        for attention, kv_width in (("attention", t), ("crossattention", v)):
            yield from _linear(f"{layer}.{attention}.self.query", t, t)
            yield from _linear(f"{layer}.{attention}.self.key", kv_width, t)
            yield from _linear(f"{layer}.{attention}.self.value", kv_width, t)
            yield from _linear(f"{layer}.{attention}.output.dense", t, t)
            yield from _norm(f"{layer}.{attention}.output.LayerNorm", t)
        yield from _linear(f"{layer}.intermediate.dense", t, config.text_intermediate)
        yield from _linear(f"{layer}.output.dense", config.text_intermediate, t)
        yield from _norm(f"{layer}.output.LayerNorm", t)
    yield from _linear("blip.vision_proj", v, config.embed_dim)
    yield from _linear("blip.text_proj", t, config.embed_dim)
    widths = config.head_widths
    for index, fan_in, fan_out in zip((0, 2, 4, 6, 7), widths[:-1], widths[1:], strict=True):
        yield from _linear(f"mlp.layers.{index}", fan_in, fan_out)


def _linear(name: str, fan_in: int, fan_out: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"{name}.weight", (fan_out, fan_in)
    yield f"{name}.bias", (fan_out,)


def _norm(name: str, width: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"{name}.weight", (width,)
    yield f"{name}.bias", (width,)


def tiny_original_state_dict(config: TinyImageRewardConfig, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with enough spread that images and prompts change the reward visibly."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in original_shapes(config, vocab_size):
        noise = torch.randn(shape, generator=generator)
        if "norm" in key.lower() and key.endswith(".weight"):
            state[key] = 1.0 + 0.1 * noise
        elif key.endswith(".bias"):
            state[key] = 0.05 * noise
        elif key.startswith("mlp."):
            state[key] = noise / shape[-1] ** 0.5  # unit gain: the reference init gives near-constant scores
        elif len(shape) >= 2 and not key.endswith(("cls_token", "pos_embed")) and "embeddings" not in key:
            state[key] = noise / (shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)) ** 0.5
        else:
            state[key] = 0.5 * noise
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(config.max_positions).expand((1, -1))
    return state


def write_tiny_original(folder: Path, seed: int = 0,
                        config: TinyImageRewardConfig = TinyImageRewardConfig()) -> TinyOriginal:
    """ImageReward.pt + med_config.json + a tokenizer folder, as a user would have them before converting."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer(folder / "bert-base-uncased")
    vocab_size = len(tokenizer_tokens()) + 2  # + [DEC] + [ENC], as bert-base-uncased's 30522 → 30524
    pt, med = folder / "ImageReward.pt", folder / "med_config.json"
    torch.save(tiny_original_state_dict(config, vocab_size, seed), str(pt))
    med.write_text(json.dumps(med_config(config, vocab_size), indent=2) + "\n", encoding="utf-8")
    return TinyOriginal(folder, pt, med, tokenizer)


def build_tiny_imagereward(folder: Path, seed: int = 0) -> Path:
    """`folder/original` (official layout) and `folder/converted` (what a card points at); returns the latter."""
    from evalkit.metrics.imagereward_convert import convert_imagereward

    original = write_tiny_original(Path(folder) / "original", seed)
    return convert_imagereward(original.pt, original.med_config, Path(folder) / "converted",
                               tokenizer=original.tokenizer)
