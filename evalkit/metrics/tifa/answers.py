"""Sentence embeddings the way TIFA's reference maps free-form answers to choices.

The reference (`tifascore/mc_sbert.py`, `SBERTModel`) does not use the sentence-transformers
library: it loads `sentence-transformers/all-mpnet-base-v2` with transformers' AutoTokenizer/
AutoModel, tokenizes with `padding=True, truncation=True` (so the tokenizer's own
`model_max_length`, not sentence-transformers' 384), mean-pools the last hidden state over the
attention mask (mask sum clamped at 1e-9), L2-normalises, and returns float32 CPU tensors.
This module does exactly that on `MPNetModel`, so a choice picked here is the choice the
reference picks, without depending on the sentence-transformers package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from evalkit.runtime.assets import resolve_hub_snapshot

DEFAULT_MODEL_ID = "sentence-transformers/all-mpnet-base-v2"
# The reference loads the hub's default branch; a metric card should pin a commit here.
DEFAULT_REVISION = "main"
# What loading needs from the hub repository: safetensors weights only (no pickles), and the
# tokenizer files; the repository's ONNX/OpenVINO exports are not downloaded.
HUB_FILES = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
]
MASK_SUM_FLOOR = 1e-9


def mean_pool(token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors that the mask keeps: padding must not dilute short texts."""
    mask = attention_mask.unsqueeze(-1).expand(token_embeddings.size()).float()
    return torch.sum(token_embeddings * mask, 1) / torch.clamp(mask.sum(1), min=MASK_SUM_FLOOR)


def embed_texts(model: torch.nn.Module, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """Unit-length embeddings (one row per text, float32 on CPU) of one padded batch."""
    if not texts:
        raise ValueError("nothing to embed")
    device = next(model.parameters()).device
    encoded = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    input_ids = encoded["input_ids"].to(device)
    attention_mask = encoded["attention_mask"].to(device)
    with torch.no_grad():
        output = model(input_ids=input_ids, attention_mask=attention_mask)
    pooled = mean_pool(output[0], attention_mask)
    return F.normalize(pooled, p=2, dim=1).detach().float().cpu()


@dataclass(frozen=True)
class SentenceEmbedder:
    """A loaded model and tokenizer, callable as the `embed` that `tifa_scoring.choose` takes."""

    model: torch.nn.Module
    tokenizer: Any
    source: str
    revision: str | None

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return embed_texts(self.model, self.tokenizer, list(texts))


def load_sentence_embedder(
    source: str | Path = DEFAULT_MODEL_ID,
    revision: str = DEFAULT_REVISION,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SentenceEmbedder:
    """Load from a local folder, or a hub id at `revision` (offline: the local cache only).

    float32 is the default because the reference runs the model in float32; other dtypes can
    move a near-tie to another choice.
    """
    from transformers import AutoTokenizer, MPNetModel

    folder, used_revision = _model_folder(source, revision)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = MPNetModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True, dtype=dtype)
    # transformers types `to` through a functools.wraps wrapper that loses the bound self
    model.to(device).eval()  # type: ignore[arg-type]
    return SentenceEmbedder(model=model, tokenizer=tokenizer, source=str(source), revision=used_revision)


def _model_folder(source: str | Path, revision: str) -> tuple[Path, str | None]:
    """A local folder wins over a hub id of the same spelling; a folder has no revision."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path, None
    return resolve_hub_snapshot(str(source), revision, allow_patterns=HUB_FILES), revision
