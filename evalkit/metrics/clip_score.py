"""CLIP score: cosine similarity of CLIP image and caption embeddings.

The scaling study reports the raw cosine (~0.27 with ViT-L/14), so that is the default
scale; `torchmetrics` (100·cos with the mean clamped at zero, its quirk) and `hessel`
(2.5·max(cos, 0) per image, with ViT-B/32) are card options. Captions longer than the
context are truncated keeping the end-of-text token (the CLIP tokenizer's truncation),
unlike torchmetrics' slicing, which drops it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics.api import ImageItem, MetricInfo, Ratio, Record, mean_value_ratios
from evalkit.metrics.cards import MetricCard
from evalkit.metrics.context import MetricContext
from evalkit.metrics.models import ResolvedModel, resolve_model
from evalkit.metrics.preprocess import CLIP_MEAN, CLIP_STD, clip_transform
from evalkit.metrics.registry import BUILTINS
from evalkit.results.recordview import COSINE_VIEW, RecordView
from evalkit.runtime.quiet import quiet_loading

SCALES = ("cosine", "torchmetrics", "hessel")
VERSION = "1"


class ClipScore:
    def __init__(self, card: MetricCard, context: MetricContext) -> None:
        del context  # reads no run-time inputs (its registry row declares none)
        self.card = card
        self.scale = BUILTINS["clip_score"].values(card)["scale"]
        if self.scale not in SCALES:
            raise EvalkitError(f"metric card {card.name!r}: unknown scale {self.scale!r}", f"use one of {SCALES}")
        self.record_view = RecordView() if self.scale == "cosine" else COSINE_VIEW
        self.info = MetricInfo(name=card.name, display_name=card.display_name or "CLIP score", version=VERSION,
                               higher_is_better=card.higher_is_better, prompt_set=card.prompt_set,
                               description=card.description)
        self._model: Any = None
        self._tokenizer: Any = None
        self._image_size = 0  # read from the model's config in setup
        self._device = torch.device("cpu")

    @cached_property
    def files(self) -> ResolvedModel:
        """The weights, resolved on first use (constructing a metric does no I/O)."""
        return resolve_model(self.card.model("clip"))

    def fingerprint(self) -> str:
        return self.card.metric_fingerprint(VERSION, weights=self.files.fingerprint)

    def models_used(self) -> dict[str, dict[str, str]]:
        return {"clip": self.files.record()}

    def setup(self, device: torch.device) -> None:
        if self._model is not None and self._device == device:
            return
        from transformers import AutoTokenizer, CLIPModel

        folder = self.files.folder
        with quiet_loading():
            # transformers types `to` through a functools.wraps wrapper that loses the bound self
            self._model = CLIPModel.from_pretrained(str(folder), use_safetensors=True).to(device).eval()  # type: ignore[arg-type]
            self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
        if len(self._tokenizer) < 100:  # transformers 5 may return a near-empty tokenizer offline
            raise EvalkitError(f"the CLIP tokenizer in {folder} is empty or missing", "re-fetch the model files")
        self._image_size = int(self._model.config.vision_config.image_size)
        self._device = device

    def prepare(self, item: ImageItem, image: Image.Image) -> dict[str, torch.Tensor]:
        tokens = self._tokenizer(item.prompt.text, padding="max_length", truncation=True,
                                 max_length=self._tokenizer.model_max_length, return_tensors="pt")
        return {"pixel_values": clip_transform(image, self._image_size, CLIP_MEAN, CLIP_STD),
                "input_ids": tokens["input_ids"][0], "attention_mask": tokens["attention_mask"][0]}

    def score_batch(self, items: Sequence[ImageItem],
                    prepared: Sequence[dict[str, torch.Tensor]]) -> list[list[Record]]:
        batch = {k: torch.stack([p[k] for p in prepared]).to(self._device) for k in prepared[0]}
        with torch.inference_mode():
            image = clip_embedding(self._model.get_image_features(pixel_values=batch["pixel_values"]))
            text = clip_embedding(self._model.get_text_features(input_ids=batch["input_ids"],
                                                            attention_mask=batch["attention_mask"]))
        cosine = torch.nn.functional.cosine_similarity(image.float(), text.float(), dim=-1).cpu().tolist()
        return [[{"cosine": c, "value": self._per_image(c)}] for c in cosine]

    def _per_image(self, cosine: float) -> float:
        if self.scale == "hessel":
            return 2.5 * max(cosine, 0.0)
        if self.scale == "torchmetrics":
            return 100.0 * cosine
        return cosine

    def prompt_ratios(self, groups: Sequence[Sequence[Record]]) -> dict[str, Ratio]:
        return mean_value_ratios(groups)

    def aggregate(self, records: Sequence[Record]) -> dict[str, Any]:
        values = [r["value"] for r in records]
        if not values:
            return {"value": math.nan, "n": 0, "scale": self.scale}
        mean = math.fsum(values) / len(values)
        if self.scale == "torchmetrics":
            mean = max(mean, 0.0)  # torchmetrics clamps the mean, not each image
        return {"value": mean, "n": len(values), "scale": self.scale}


def clip_embedding(output: Any) -> torch.Tensor:
    """transformers 5 returns a ModelOutput whose pooler_output is the projected embedding."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
