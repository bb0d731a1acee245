"""PickScore (Kirstain et al. 2023): a CLIP-H fine-tuned on Pick-a-Pic preferences, batched.

The reference is the authors' published scoring snippet (README of yuvalkirstain/PickScore):
`AutoProcessor` of laion/CLIP-ViT-H-14-laion2B-s32B-b79K and `AutoModel` of
yuvalkirstain/PickScore_v1; per prompt, `processor(images=..., ...)` and `processor(text=prompt,
padding=True, truncation=True, max_length=77)`, L2-normalised `get_image_features` /
`get_text_features`, and `logit_scale.exp() * text @ image.T` — the score (~18-23 on real
images); its softmax over one prompt's images is the snippet's "probs", a comparison between
images rather than a score of one image, so records hold the score and the raw cosine.

Reproduced quirks: the processor is the slow (PIL) `CLIPImageProcessor` of that time — the
shorter side resized bicubic with the long side truncated, then a floored centre crop
(`preprocess.clip_processor_transform`); its sizes, mean and std are read from the processor
folder's preprocessor_config.json, whose weights are never fetched (`models.resolve_processor`).
Texts are padded to 77 with the attention mask (the snippet pads one prompt to itself; the
pooled end-of-text output is the same, within float rounding).
Deviations, deliberate: many images and prompts per forward, float32 on every device.
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
from evalkit.metrics.clip_score import clip_embedding
from evalkit.metrics.context import MetricContext
from evalkit.metrics.models import ResolvedModel, resolve_model, resolve_processor
from evalkit.metrics.preprocess import ImageProcessing, clip_processor_transform
from evalkit.results.recordview import COSINE_VIEW
from evalkit.runtime.quiet import quiet_loading

VERSION = "1"
MAX_LENGTH = 77  # the snippet's truncation length


class PickScore:
    def __init__(self, card: MetricCard, context: MetricContext) -> None:
        del context  # reads no run-time inputs (its registry row declares none)
        self.card = card
        self.record_view = COSINE_VIEW
        self.info = MetricInfo(name=card.name, display_name=card.display_name or "PickScore", version=VERSION,
                               higher_is_better=card.higher_is_better, prompt_set=card.prompt_set,
                               description=card.description)
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = torch.device("cpu")

    @cached_property
    def weights(self) -> ResolvedModel:
        return resolve_model(self.card.model("model"))

    @cached_property
    def processor(self) -> ResolvedModel:
        return resolve_processor(self.card.model("processor"))

    @cached_property
    def processing(self) -> ImageProcessing:
        return ImageProcessing.read(self.processor.folder)

    def fingerprint(self) -> str:
        return self.card.metric_fingerprint(VERSION, weights=self.weights.fingerprint,
                                            processor=self.processor.fingerprint)

    def models_used(self) -> dict[str, dict[str, str]]:
        return {"model": self.weights.record(), "processor": self.processor.record()}

    def setup(self, device: torch.device) -> None:
        if self._model is not None and self._device == device:
            return
        from transformers import AutoTokenizer, CLIPModel

        with quiet_loading():
            model = CLIPModel.from_pretrained(str(self.weights.folder), use_safetensors=True)
            self._model = model.to(device).eval()  # type: ignore[arg-type]
            self._tokenizer = AutoTokenizer.from_pretrained(str(self.processor.folder))
        if len(self._tokenizer) < 100:  # transformers 5 may return a near-empty tokenizer offline
            raise EvalkitError(f"the tokenizer in {self.processor.folder} is empty or missing",
                               "re-fetch the processor files")
        _ = self.processing  # read and checked here, before the first image is prepared in a worker thread
        self._device = device

    def prepare(self, item: ImageItem, image: Image.Image) -> dict[str, torch.Tensor]:
        if self._tokenizer is None:
            raise RuntimeError("PickScore.setup() must run before prepare()")
        p = self.processing
        tokens = self._tokenizer(item.prompt.text, padding="max_length", truncation=True, max_length=MAX_LENGTH,
                                 return_tensors="pt")
        return {"pixel_values": clip_processor_transform(image, p.shortest_edge, p.crop, p.mean, p.std),
                "input_ids": tokens["input_ids"][0], "attention_mask": tokens["attention_mask"][0]}

    def score_batch(self, items: Sequence[ImageItem],
                    prepared: Sequence[dict[str, torch.Tensor]]) -> list[list[Record]]:
        if self._model is None:
            raise RuntimeError("PickScore.setup() must run before score_batch()")
        batch = {k: torch.stack([p[k] for p in prepared]).to(self._device) for k in prepared[0]}
        with torch.inference_mode():
            image = clip_embedding(self._model.get_image_features(pixel_values=batch["pixel_values"])).float()
            text = clip_embedding(self._model.get_text_features(input_ids=batch["input_ids"],
                                                            attention_mask=batch["attention_mask"])).float()
            image = image / torch.norm(image, dim=-1, keepdim=True)
            text = text / torch.norm(text, dim=-1, keepdim=True)
            cosine = (image * text).sum(dim=-1)
            scale = float(self._model.logit_scale.exp())
        return [[{"value": scale * c, "cosine": c}] for c in cosine.cpu().tolist()]

    def prompt_ratios(self, groups: Sequence[Sequence[Record]]) -> dict[str, Ratio]:
        return mean_value_ratios(groups)

    def aggregate(self, records: Sequence[Record]) -> dict[str, Any]:
        values = [float(r["value"]) for r in records]
        if not values:
            return {"value": math.nan, "n": 0}
        return {"value": math.fsum(values) / len(values), "n": len(values)}
