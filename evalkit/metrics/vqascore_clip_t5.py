"""VQAScore's CLIP-FlanT5 backend, as t2v_metrics 3.0 computes it (`CLIPT5Model.forward`).

The question in CLIP-T5's `t5_chat` conversation with the image slot, the image padded to a square
with the processor's mean colour (`image_aspect_ratio: pad`) and through CLIP's processor; the score
is the likelihood of the answer's tokens: exp(−mean cross-entropy) over [▁Yes, </s>]
(`clip_t5.ClipT5.answer_likelihood`). Prompts are cut to the tokenizer's 2048 tokens.

Precision: the reference casts the model to bfloat16 and runs it under CUDA autocast; on CUDA a
bfloat16 run does the same (`to(..., torch.bfloat16)`), float32 runs without autocast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from evalkit.metrics.clip_t5 import ClipT5, expand2square, image_token_ids, load_clip_t5, t5_chat
from evalkit.metrics.preprocess import ImageProcessing, clip_processor_transform

CONTEXT_LEN = 2048  # t2v_metrics.constants: prompts are cut to the tokenizer's model_max_length


@dataclass
class ClipT5YesScorer:
    """A loaded CLIP-FlanT5 with its tokenizer and CLIP image processing (module doc)."""

    model: ClipT5
    tokenizer: Any
    processing: ImageProcessing
    answer_ids: list[int]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        self.model = self.model.to(device=device, dtype=dtype)
        self.device, self.dtype = device, dtype

    def prepare(self, question: str, image: Image.Image) -> dict[str, Any]:
        p = self.processing
        square = expand2square(image.convert("RGB"), tuple(int(x * 255) for x in p.mean))
        prompt = image_token_ids(t5_chat(question), self.tokenizer)
        return {"pixels": clip_processor_transform(square, p.shortest_edge, p.crop, p.mean, p.std),
                "prompt": prompt[:CONTEXT_LEN]}

    def score(self, prepared: Sequence[dict[str, Any]]) -> list[float]:
        pixels = torch.stack([p["pixels"] for p in prepared]).to(self.device, self.dtype)
        with torch.inference_mode(), self._autocast():
            scores = self.model.answer_likelihood(pixels, [p["prompt"] for p in prepared], self.answer_ids,
                                                  int(self.tokenizer.pad_token_id))
        return [float(s) for s in scores.float().cpu().tolist()]

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self.device.type == "cuda" and self.dtype == torch.bfloat16:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                yield
        else:
            yield


def load_clip_t5_yes(model: Path, tokenizer: Path, vision: Path, answer: str) -> ClipT5YesScorer:
    """The three folders of a CLIP-FlanT5 card, loaded in float32 on the CPU."""
    from transformers import AutoTokenizer

    processing = ImageProcessing.read(vision)  # read and checked before the first image is prepared
    net = load_clip_t5(model, vision)
    loaded = AutoTokenizer.from_pretrained(str(tokenizer))
    return ClipT5YesScorer(model=net, tokenizer=loaded, processing=processing,
                           answer_ids=image_token_ids(answer, loaded))
