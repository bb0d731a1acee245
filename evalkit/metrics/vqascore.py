"""VQAScore (Lin et al. 2024): how likely a VLM answers "Yes" when asked whether the image shows the prompt.

The reference is t2v_metrics 3.0 (`t2v_metrics.VQAScore(model=...)`). One record per image, `value`
in [0, 1]; the aggregate is the mean over images (a mean over prompts for intervals).

Backends (`params.backend`, one row each in `BACKENDS`: the card's model roles, the reference's
question template for that model, its loader):
- `clip-flant5` — CLIP-FlanT5 (zhiqiulin/clip-flant5-xxl, or -xl), the model of the paper's numbers,
  with its T5 tokenizer (google/flan-t5-xxl) and CLIP tower (openai/clip-vit-large-patch14-336);
  `Does this figure show "{}"? Please answer yes or no.`, the likelihood of [▁Yes, </s>]
  (`vqascore_clip_t5`).
- `qwen2.5-vl` — a Qwen2.5-VL (or Qwen2-VL) Instruct checkpoint, one folder with its processor;
  `Does this image show "{}"?`, P(first token of "Yes") after the checkpoint's repetition penalty
  (`vqascore_qwen`).
A card's `question_template` overrides the backend's (scores are then not the reference's).

Precision: `dtype: bfloat16` (the cards') is the reference's on CUDA; on CPU evalkit runs float32
(CLIP-FlanT5's bfloat16 projector cannot take the tower's float32 output there, and CPU runs are
tests and demos). `dtype: float32` runs float32 everywhere (what the parity tests check, to 1e-5).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics.api import ImageItem, MetricInfo, Ratio, Record, mean_value_aggregate, mean_value_ratios
from evalkit.metrics.cards import MetricCard, ModelRef
from evalkit.metrics.context import MetricContext
from evalkit.metrics.models import ResolvedModel, resolve_model, resolve_processor
from evalkit.metrics.registry import BUILTINS
from evalkit.runtime.quiet import quiet_loading

VERSION = "1"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class YesScorer(Protocol):
    """A loaded backend: inputs per image in a worker thread, then P(answer) per batch."""

    def to(self, device: torch.device, dtype: torch.dtype) -> None: ...

    def prepare(self, question: str, image: Image.Image) -> dict[str, Any]: ...

    def score(self, prepared: Sequence[dict[str, Any]]) -> list[float]: ...


def _tokenizer(ref: ModelRef) -> ResolvedModel:
    return resolve_processor(ref, required="tokenizer_config.json")


def _load_clip_t5(files: Mapping[str, ResolvedModel], answer: str, name: str) -> YesScorer:
    from evalkit.metrics.vqascore_clip_t5 import load_clip_t5_yes

    return load_clip_t5_yes(files["model"].folder, files["tokenizer"].folder, files["vision"].folder, answer)


def _load_qwen(files: Mapping[str, ResolvedModel], answer: str, name: str) -> YesScorer:
    from evalkit.metrics.vqascore_qwen import load_qwen_yes

    return load_qwen_yes(files["model"].folder, answer, name=name)


@dataclass(frozen=True)
class Backend:
    """One VQA model family as t2v_metrics runs it."""

    roles: Mapping[str, Callable[[ModelRef], ResolvedModel]]  # card model role -> how its files resolve
    question_template: str  # the reference's default for this family
    load: Callable[[Mapping[str, ResolvedModel], str, str], YesScorer]  # (files, answer, card name)


BACKENDS: Mapping[str, Backend] = {
    "clip-flant5": Backend({"model": resolve_model, "tokenizer": _tokenizer, "vision": resolve_model},
                           'Does this figure show "{}"? Please answer yes or no.', _load_clip_t5),
    "qwen2.5-vl": Backend({"model": resolve_model}, 'Does this image show "{}"?', _load_qwen),
}


class VQAScore:
    def __init__(self, card: MetricCard, context: MetricContext) -> None:
        del context  # reads no run-time inputs (its registry row declares none)
        self.card = card
        params = BUILTINS["vqascore"].values(card)
        self.backend_name: str = params["backend"]
        if self.backend_name not in BACKENDS:
            raise EvalkitError(f"metric card {card.name!r}: unknown VQAScore backend {self.backend_name!r}",
                               f"use one of {list(BACKENDS)}")
        self.backend = BACKENDS[self.backend_name]
        self.question_template: str = params["question_template"] or self.backend.question_template
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
        self._scorer: YesScorer | None = None
        self._device: torch.device | None = None

    # --- files and fingerprint ---------------------------------------------------------------------------
    @cached_property
    def files(self) -> dict[str, ResolvedModel]:
        return {role: resolve(self.card.model(role)) for role, resolve in self.backend.roles.items()}

    def fingerprint(self) -> str:
        return self.card.metric_fingerprint(VERSION, question=self.question_template,
                                            **{role: f.fingerprint for role, f in self.files.items()})

    def models_used(self) -> dict[str, dict[str, str]]:
        return {role: f.record(backend=self.backend_name) if role == "model" else f.record()
                for role, f in self.files.items()}

    # --- the plugin contract -----------------------------------------------------------------------------
    def _dtype(self, device: torch.device) -> torch.dtype:
        return DTYPES[self.dtype_name] if device.type == "cuda" else torch.float32

    def setup(self, device: torch.device) -> None:
        if self._scorer is None:
            with quiet_loading():
                self._scorer = self.backend.load(self.files, self.answer, self.card.name)
        if self._device != device:
            self._scorer.to(device, self._dtype(device))
            self._device = device

    def _loaded(self, step: str) -> YesScorer:
        if self._scorer is None:
            raise RuntimeError(f"VQAScore.setup() must run before {step}()")
        return self._scorer

    def prepare(self, item: ImageItem, image: Image.Image) -> dict[str, Any]:
        return self._loaded("prepare").prepare(self.question_template.format(item.prompt.text), image)

    def score_batch(self, items: Sequence[ImageItem], prepared: Sequence[dict[str, Any]]) -> list[list[Record]]:
        return [[{"value": s}] for s in self._loaded("score_batch").score(prepared)]

    def prompt_ratios(self, groups: Sequence[Sequence[Record]]) -> dict[str, Ratio]:
        return mean_value_ratios(groups)

    def aggregate(self, records: Sequence[Record]) -> dict[str, Any]:
        return mean_value_aggregate(records, backend=self.backend_name)
