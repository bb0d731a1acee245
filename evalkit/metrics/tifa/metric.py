"""TIFA as an evalkit metric: VQA answers to each prompt's questions, scored as the reference.

Per image, every question of its prompt is answered by the card's VQA backend (the image
encoded once, its questions batched), mapped to a choice and scored by
`tifa_scoring` (reference-exact); one record per question is stored, and the aggregate is
the reference's macro average, sample stdev and per-type micro accuracy, plus per source.
The question file is the 25,829-question TIFA v1.0 file (hub dataset or `--tifa-qa PATH`,
blob-hash checked) or, for the `tifa-v1.0-sample` set, the 19 shipped sample questions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics.api import ImageItem, MetricInfo, Ratio, Record
from evalkit.metrics.cards import MetricCard
from evalkit.metrics.context import MetricContext
from evalkit.metrics.models import ResolvedModel, resolve_model
from evalkit.metrics.registry import BUILTINS
from evalkit.metrics.tifa.questions import Question, TifaQuestions, load_tifa_questions, sample_questions
from evalkit.metrics.tifa.scoring import ChoiceMemo, QuestionRecord, aggregate, score_questions
from evalkit.results.recordview import RecordField, RecordView
from evalkit.runtime.quiet import quiet_loading

VERSION = "1"
# What the site lists per question (the stored QuestionRecord's fields), filterable by element type.
RECORD_VIEW = RecordView(score="correct", fields=(
    RecordField("question", "question"), RecordField("element_type", "element type"), RecordField("element", "element"),
    RecordField("choices", "choices"), RecordField("answer", "expected"), RecordField("free_form_answer", "VQA said"),
    RecordField("chosen", "mapped to")), filter="element_type", unit="question")
VQA_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TifaMetric:
    record_view = RECORD_VIEW

    def __init__(self, card: MetricCard, context: MetricContext) -> None:
        self.card = card
        self.tifa_qa = context.tifa_qa  # --tifa-qa; None: the hub dataset
        params = BUILTINS["tifa"].values(card)
        self.backend_name: str = params["vqa_backend"]
        self.questions_source: str = params["questions"]
        # float32 by default, as the reference runs GIT; a card may choose bf16/fp16 for large VLMs
        # (part of the card, so of the fingerprint: half-precision answers are a different metric run).
        dtype_name: str = params["dtype"]
        if dtype_name not in VQA_DTYPES:
            raise EvalkitError(f"metric card {card.name!r}: unknown dtype {dtype_name!r}",
                               f"use one of {', '.join(VQA_DTYPES)}")
        self.dtype = VQA_DTYPES[dtype_name]
        self.info = MetricInfo(name=card.name, display_name=card.display_name or "TIFA", version=VERSION,
                               higher_is_better=card.higher_is_better, prompt_set=card.prompt_set,
                               description=card.description)
        self._models: dict[str, ResolvedModel] = {}
        self._questions: TifaQuestions | None = None
        self._backend: Any = None
        self._embed: Any = None
        self._memo = ChoiceMemo()  # decisions of the loaded sentence model, across images and steps
        self._device: torch.device | None = None

    def _model(self, role: str) -> ResolvedModel:
        if role not in self._models:
            self._models[role] = resolve_model(self.card.model(role))
        return self._models[role]

    def questions(self) -> TifaQuestions:
        if self._questions is None:
            if self.questions_source == "sample":
                self._questions = sample_questions()
            else:
                self._questions = load_tifa_questions(self.tifa_qa)
        return self._questions

    def fingerprint(self) -> str:
        questions = self.questions()
        return self.card.metric_fingerprint(VERSION, vqa=self._model("vqa").fingerprint,
                                            sentence=self._model("sentence").fingerprint,
                                            questions=questions.blob or questions.source)

    def models_used(self) -> dict[str, dict[str, str]]:
        return {"vqa": self._model("vqa").record(backend=self.backend_name),
                "sentence": self._model("sentence").record()}

    def setup(self, device: torch.device) -> None:
        if self._backend is not None and self._device == device:
            return
        from evalkit.metrics.tifa.answers import load_sentence_embedder
        from evalkit.metrics.tifa.vqa import load_vqa_backend

        with quiet_loading():
            self._backend = load_vqa_backend(self.backend_name, self._model("vqa").folder, device=device,
                                             dtype=self.dtype)
            self._embed = load_sentence_embedder(self._model("sentence").folder, device=device)
        self._memo = ChoiceMemo()
        self._device = device

    def prepare(self, item: ImageItem, image: Image.Image) -> Image.Image:
        return image.copy()  # the backend's own processor preprocesses, batched

    def score_batch(self, items: Sequence[ImageItem], prepared: Sequence[Image.Image]) -> list[list[Record]]:
        from evalkit.metrics.tifa.vqa import answer_tifa_questions

        per_image = [self._questions_for(item) for item in items]
        answers = answer_tifa_questions(self._backend, list(prepared), per_image)
        out: list[list[Record]] = []
        position = 0
        for questions in per_image:
            chunk = answers[position:position + len(questions)]
            position += len(questions)
            out.append([_as_record(r) for r in score_questions(questions, chunk, self._embed, self._memo)])
        return out

    def _questions_for(self, item: ImageItem) -> tuple[Question, ...]:
        questions = self.questions().get(item.prompt.id, ())
        if not questions:
            raise EvalkitError(f"TIFA has no questions for prompt {item.prompt.id!r}",
                               "score TIFA on tifa-v1.0 (or tifa-v1.0-sample with the tifa-sample card)")
        return questions

    def prompt_ratios(self, groups: Sequence[Sequence[Record]]) -> dict[str, Ratio]:
        """Headline: per prompt the mean over its questions (macro); element types: correct / asked (micro)."""
        types = sorted({str(r["element_type"]) for g in groups for r in g})
        ratios: dict[str, Ratio] = {"value": ([sum(bool(r["correct"]) for r in g) / len(g) if g else 0.0
                                               for g in groups], [1.0 if g else 0.0 for g in groups])}
        for kind in types:
            ratios[f"element_type/{kind}"] = (
                [float(sum(bool(r["correct"]) for r in g if r["element_type"] == kind)) for g in groups],
                [float(sum(r["element_type"] == kind for r in g)) for g in groups])
        return ratios

    def aggregate(self, records: Sequence[Record]) -> dict[str, Any]:
        if not records:
            return {"value": float("nan"), "n": 0}
        result = aggregate(QuestionRecord(**{**r, "choices": tuple(r["choices"])}) for r in records)
        return {"value": float(result.tifa_average), "stdev": float(result.stdev), "n": result.n,
                "n_questions": result.n_questions,
                "accuracy_by_type": {k: float(v) for k, v in result.accuracy_by_type.items()},
                "by_source": {k: float(v) for k, v in result.by_source.items()}}


def _as_record(record: QuestionRecord) -> Record:
    value = dataclasses.asdict(record)
    value["choices"] = list(record.choices)
    return value
