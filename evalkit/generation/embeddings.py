"""Prompt embeddings computed once per (text encoders, prompt text) and reused.

Embeddings are computed in fixed chunks of a prompt set (by prompt index), never in the
generation batch, so their values cannot depend on batch size, shard or resume point, and
every checkpoint of a training run that shares the text encoder reuses them. They are kept
in host memory up to a budget; past it, chunks are recomputed (identically) on demand.
"""

from __future__ import annotations

from typing import Any

import torch

from evalkit.fileio.hashing import sha256_json

CHUNK = 32
DEFAULT_BUDGET = 8 << 30


class EmbeddingStore:
    def __init__(self, budget_bytes: int = DEFAULT_BUDGET) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self.computed_chunks = 0  # how many chunks were encoded (a reuse check for tests and logs)
        self._chunks: dict[str, dict[str, torch.Tensor]] = {}

    def rows(self, loaded: Any, texts_by_chunk: list[tuple[tuple[str, ...], int]]) -> dict[str, torch.Tensor]:
        """Embeddings for a batch: one (chunk texts, row in chunk) pair per sample."""
        columns: dict[str, list[torch.Tensor]] = {}
        for chunk_texts, row in texts_by_chunk:
            chunk = self._chunk(loaded, chunk_texts)
            for name, tensor in chunk.items():
                columns.setdefault(name, []).append(tensor[row])
        device = loaded.pipe.device
        return {name: torch.stack(values).to(device) for name, values in columns.items()}

    def negative(self, loaded: Any, negative: str) -> dict[str, torch.Tensor]:
        key = self._key(loaded, ("negative", negative))
        if key not in self._chunks:
            out = loaded.adapter.encode_negative(loaded.pipe, negative, loaded.pipe.device)
            self._chunks[key] = {n: t.detach() for n, t in out.items()}
        return self._chunks[key]

    def _chunk(self, loaded: Any, texts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        key = self._key(loaded, texts)
        cached = self._chunks.get(key)
        if cached is not None:
            return cached
        encoded = loaded.adapter.encode(loaded.pipe, list(texts), loaded.pipe.device)
        self.computed_chunks += 1
        chunk = {name: t.detach().to("cpu") for name, t in encoded.items()}
        size = sum(t.numel() * t.element_size() for t in chunk.values())
        if self.used_bytes + size <= self.budget_bytes:
            self._chunks[key] = chunk
            self.used_bytes += size
        return chunk

    @staticmethod
    def _key(loaded: Any, texts: tuple[str, ...]) -> str:
        dtype = str(next(loaded.pipe.text_encoder.parameters()).dtype) if _has_text_encoder(loaded.pipe) else ""
        return sha256_json([loaded.text_fingerprint, loaded.adapter.family, str(loaded.pipe.device), dtype,
                            list(texts)])


def _has_text_encoder(pipe: Any) -> bool:
    return getattr(pipe, "text_encoder", None) is not None


def chunk_of(index: int) -> tuple[int, int]:
    """(chunk number, row within it) of the prompt at `index` in its set."""
    return divmod(index, CHUNK)
