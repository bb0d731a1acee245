"""VQAScore (Lin et al. 2024): how likely a VLM answers "Yes" when asked whether the image shows the prompt.

The reference is t2v_metrics (`t2v_metrics.VQAScore(model='clip-flant5-xxl')`): the question
`Does this figure show "{prompt}"? Please answer yes or no.`, the answer "Yes", and the model's
likelihood of that answer (`clip_t5`: exp(−mean CE) over [▁Yes, </s>]). One record per image,
`value` in [0, 1]; the aggregate is the mean over images (a mean over prompts for intervals).

Backends (`params.backend`): `clip-flant5` — CLIP-FlanT5 (zhiqiulin/clip-flant5-xxl, or -xl), the
model of the paper's numbers, with its T5 tokenizer (google/flan-t5-xxl) and its CLIP tower
(openai/clip-vit-large-patch14-336, whose processor config sizes the images).

Precision: the reference casts the model to bfloat16 and runs it under CUDA autocast. `dtype:
bfloat16` (the card's) does the same on CUDA; on CPU, where the reference's bfloat16 projector
cannot take the tower's float32 output at all, evalkit runs float32. `dtype: float32` runs float32
everywhere (what the parity test checks, to 1e-5).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any

import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics.api import ImageItem, MetricInfo, Ratio, Record, mean_value_aggregate, mean_value_ratios
from evalkit.metrics.cards import MetricCard
from evalkit.metrics.clip_t5 import ClipT5, expand2square, image_token_ids, load_clip_t5, t5_chat
from evalkit.metrics.context import MetricContext
from evalkit.metrics.models import ResolvedModel, resolve_model, resolve_processor
from evalkit.metrics.preprocess import ImageProcessing, clip_processor_transform
from evalkit.metrics.registry import BUILTINS
from evalkit.runtime.quiet import quiet_loading

VERSION = "1"
BACKENDS = ("clip-flant5",)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CONTEXT_LEN = 2048  # t2v_metrics.constants: prompts are cut to the tokenizer's model_max_length


class VQAScore:
    def __init__(self, card: MetricCard, context: MetricContext) -> None:
        del context  # reads no run-time inputs (its registry row declares none)
        self.card = card
        params = BUILTINS["vqascore"].values(card)
        self.backend: str = params["backend"]
        if self.backend not in BACKENDS:
            raise EvalkitError(f"metric card {card.name!r}: unknown VQAScore backend {self.backend!r}",
                               f"use one of {BACKENDS}")
        self.question_template: str = params["question_template"]
        self.answer: str = params["answer"]
        if "{}" not in self.question_template:
            raise EvalkitError(f"metric card {card.name!r}: question_template has no {{}} for the prompt",
                               'e.g. Does this figure show "{}"? Please answer yes or no.')
        if params["dtype"] not in DTYPES:
            raise EvalkitError(f"metric card {card.name!r}: unknown dtype {params['dtype']!r}",
                               f"use one of {list(DTYPES)}")
        self.dtype_name: str = params["dtype"]
        self.info = MetricInfo(name=card.name, display_name=card.display_name or "VQAScore", version=VERSION,
                               higher_is_better=card.higher_is_better, prompt_set=card.prompt_set,
                               description=card.description)
        self._model: ClipT5 | None = None
        self._tokenizer: Any = None
        self._answer_ids: list[int] = []
        self._device = torch.device("cpu")

    # --- files and fingerprint ---------------------------------------------------------------------------
    @cached_property
    def weights(self) -> ResolvedModel:
        return resolve_model(self.card.model("model"))

    @cached_property
    def tokenizer_files(self) -> ResolvedModel:
        return resolve_processor(self.card.model("tokenizer"), required="tokenizer_config.json")

    @cached_property
    def vision(self) -> ResolvedModel:
        return resolve_model(self.card.model("vision"))

    @cached_property
    def processing(self) -> ImageProcessing:
        return ImageProcessing.read(self.vision.folder)

    def fingerprint(self) -> str:
        return self.card.metric_fingerprint(VERSION, model=self.weights.fingerprint,
                                            tokenizer=self.tokenizer_files.fingerprint, vision=self.vision.fingerprint)

    def models_used(self) -> dict[str, dict[str, str]]:
        return {"model": self.weights.record(backend=self.backend), "tokenizer": self.tokenizer_files.record(),
                "vision": self.vision.record()}

    # --- the plugin contract -----------------------------------------------------------------------------
    def _dtype(self, device: torch.device) -> torch.dtype:
        return DTYPES[self.dtype_name] if device.type == "cuda" else torch.float32

    def setup(self, device: torch.device) -> None:
        if self._model is not None and self._device == device:
            return
        if self._model is None:
            from transformers import AutoTokenizer

            with quiet_loading():
                self._model = load_clip_t5(self.weights.folder, self.vision.folder)
                self._tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer_files.folder))
            self._answer_ids = image_token_ids(self.answer, self._tokenizer)
            _ = self.processing  # read and checked before the first image is prepared in a worker thread
        self._model = self._model.to(device=device, dtype=self._dtype(device))
        self._device = device

    def prepare(self, item: ImageItem, image: Image.Image) -> dict[str, Any]:
        if self._tokenizer is None:
            raise RuntimeError("VQAScore.setup() must run before prepare()")
        p = self.processing
        square = expand2square(image.convert("RGB"), tuple(int(x * 255) for x in p.mean))
        prompt = image_token_ids(t5_chat(self.question_template.format(item.prompt.text)), self._tokenizer)
        return {"pixels": clip_processor_transform(square, p.shortest_edge, p.crop, p.mean, p.std),
                "prompt": prompt[:CONTEXT_LEN]}

    def score_batch(self, items: Sequence[ImageItem], prepared: Sequence[dict[str, Any]]) -> list[list[Record]]:
        if self._model is None:
            raise RuntimeError("VQAScore.setup() must run before score_batch()")
        pixels = torch.stack([p["pixels"] for p in prepared]).to(self._device, self._dtype(self._device))
        with torch.inference_mode(), self._autocast():
            scores = self._model.answer_likelihood(pixels, [p["prompt"] for p in prepared], self._answer_ids,
                                                   int(self._tokenizer.pad_token_id))
        return [[{"value": float(s)}] for s in scores.float().cpu().tolist()]

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        if self._device.type == "cuda" and self.dtype_name == "bfloat16":
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                yield
        else:
            yield

    def prompt_ratios(self, groups: Sequence[Sequence[Record]]) -> dict[str, Ratio]:
        return mean_value_ratios(groups)

    def aggregate(self, records: Sequence[Record]) -> dict[str, Any]:
        return mean_value_aggregate(records, backend=self.backend)
