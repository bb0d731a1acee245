"""Tiny random VQA (GIT) and sentence-embedding (MPNet) checkpoints written from code.

The TIFA metric's tests and the demo run the real transformers code paths on these; the
vocabularies are small word lists plus single characters, so any text tokenizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

import torch

LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"
TIFA_WORDS = ("what", "is", "the", "color", "of", "how", "many", "are", "there", "a", "yes", "no", "in", "image",
              "does", "have", "this", "photo", "red", "blue", "gray", "black", "white", "dog", "cat", "man")


class _SmallLayers(TypedDict):
    """The size settings GIT's text and vision configs share."""

    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    initializer_range: float


def write_tiny_git(folder: Path, words: Sequence[str] = TIFA_WORDS, seed: int = 0) -> Path:
    """A 2-layer GIT with a WordPiece tokenizer and a PIL CLIP image processor at 32 px."""
    from transformers import BertTokenizer, GitConfig, GitForCausalLM
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *LETTERS, *"?.,'", *(f"##{c}" for c in LETTERS), *words]
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(dict.fromkeys(tokens))})
    small: _SmallLayers = {"num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
                           "initializer_range": 0.1}
    config = GitConfig(
        vision_config={"hidden_size": 32, "image_size": 32, "patch_size": 8, **small},
        vocab_size=len(tokenizer), hidden_size=32, max_position_embeddings=128, **small,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    folder = Path(folder)
    GitForCausalLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        str(folder))
    return folder


def write_tiny_mpnet(folder: Path, words: Sequence[str] = TIFA_WORDS, seed: int = 0) -> Path:
    """A random 2-layer MPNet and a lower-casing WordPiece tokenizer, like all-mpnet-base-v2's."""
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

    letters = list(LETTERS)
    tokens = ["<s>", "<pad>", "</s>", "[UNK]", *words, *letters, *[f"##{c}" for c in letters], "<mask>"]
    tokens = list(dict.fromkeys(tokens))
    tokenizer = MPNetTokenizer(vocab={t: i for i, t in enumerate(tokens)}, model_max_length=32)
    folder = Path(folder)
    tokenizer.save_pretrained(str(folder))
    config = MPNetConfig(vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=48, max_position_embeddings=40, pad_token_id=1)
    torch.manual_seed(seed)
    MPNetModel(config).eval().save_pretrained(str(folder))
    return folder
