"""DSG (Cho et al. 2024, Davidsonian Scene Graph): yes/no questions with dependencies, answered by a VQA model.

The questions are the published DSG-1k set, shipped as the `dsg-1k` prompt set (each prompt's
questions in `data.dsg`, verbatim from j-min/DSG's dsg-1k-anns.csv: its TIFA160 items included).
Each image's questions are answered by one of evalkit's VQA backends (the TIFA loop: the image
encoded once, its questions batched), with the question as the prompt — the reference's mPLUG
wrapper passes it unchanged.

Scoring is the reference's `dsg.vqa_utils.calc_vqa_score` over `dsg.data_utils`' parse:
- a question scores 1 when the VQA answer is exactly "yes" (no normalisation: the reference
  compares `answer == 'yes'`), else 0;
- a question one of whose parents scored 0 is zeroed ("invalid"); parent 0 means none;
- the image's score is the mean over all its questions after zeroing
  (`average_score_with_dependency`); the metric is the mean over images.
Quirks reproduced: `data_utils` parses an item's dependencies all at once, and when one of its
rows is not a list of integers (10 upstream rows such as "5, right") the whole item gets no
dependencies (the except branch leaves `{}`), so none of its questions is zeroed (8 items upstream).
Deviation: a parent id missing from the item's questions is ignored (the reference would raise
KeyError; the one such item upstream is tifa160_134, whose proposition 1 is absent).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics.api import ImageItem, MetricInfo, Ratio, Record
from evalkit.metrics.cards import MetricCard
from evalkit.metrics.context import MetricContext
from evalkit.metrics.models import ResolvedModel, resolve_model
from evalkit.metrics.registry import BUILTINS
from evalkit.results.recordview import RecordField, RecordView
from evalkit.runtime.quiet import quiet_loading

VERSION = "1"
YES = "yes"
RECORD_VIEW = RecordView(score="score", fields=(
    RecordField("question", "question"), RecordField("category", "category"), RecordField("detail", "detail"),
    RecordField("answer", "VQA said"), RecordField("valid", "parents answered yes")),
    filter="category", unit="question")
VQA_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class DsgQuestion:
    id: int
    question: str
    dependency: str  # verbatim: "0", "1", "1,2", or upstream's occasional "5, right"
    category: str
    detail: str


def questions_of(data: Mapping[str, Any] | None, prompt_id: str) -> tuple[DsgQuestion, ...]:
    rows = (data or {}).get("dsg")
    if not rows:
        raise EvalkitError(f"prompt {prompt_id!r} has no DSG questions",
                           "score DSG on the dsg-1k prompt set (its prompts carry their questions)")
    return tuple(DsgQuestion(int(r["id"]), str(r["question"]), str(r["dependency"]), str(r["category"]),
                             str(r["detail"])) for r in rows)


def parse_dependencies(questions: Sequence[DsgQuestion]) -> dict[int, list[int]]:
    """`data_utils`' parse of one item: parents per question, or {} for the whole item when a row fails."""
    parsed: dict[int, list[int]] = {}
    for q in questions:
        try:
            parsed[q.id] = [int(x.strip()) for x in q.dependency.split(",")]
        except ValueError:
            return {}
    return parsed


@dataclass(frozen=True)
class DsgRecord:
    prompt_id: str  # the image's prompt: images of one prompt are pooled, as TIFA's records are
    id: int
    question: str
    category: str
    detail: str
    answer: str
    correct: bool  # answered exactly "yes"
    valid: bool  # no parent answered otherwise
    score: float  # correct and valid


def score_item(prompt_id: str, questions: Sequence[DsgQuestion], answers: Sequence[str]) -> list[DsgRecord]:
    """`calc_vqa_score` on one image: yes-match, then zero every question with a parent scored 0."""
    correct = {q.id: answer == YES for q, answer in zip(questions, answers, strict=True)}
    parents = parse_dependencies(questions)
    records = []
    for q, answer in zip(questions, answers, strict=True):
        valid = not any(p != 0 and p in correct and not correct[p] for p in parents.get(q.id, [0]))
        records.append(DsgRecord(prompt_id, q.id, q.question, q.category, q.detail, answer, correct[q.id], valid,
                                 float(correct[q.id] and valid)))
    return records


def prompt_scores(records: Sequence[Record], field: str = "score") -> list[float]:
    """Per prompt (first-appearance order) the mean of `field` over its questions: the item scores."""
    grouped: dict[str, list[float]] = {}
    for r in records:
        grouped.setdefault(str(r["prompt_id"]), []).append(float(r[field]))
    return [math.fsum(v) / len(v) for v in grouped.values()]


class DSG:
    record_view = RECORD_VIEW

    def __init__(self, card: MetricCard, context: MetricContext) -> None:
        del context  # the questions travel with the prompts
        self.card = card
        params = BUILTINS["dsg"].values(card)
        self.backend_name: str = params["vqa_backend"]
        if params["dtype"] not in VQA_DTYPES:
            raise EvalkitError(f"metric card {card.name!r}: unknown dtype {params['dtype']!r}",
                               f"use one of {', '.join(VQA_DTYPES)}")
        self.dtype = VQA_DTYPES[params["dtype"]]
        self.info = MetricInfo(name=card.name, display_name=card.display_name or "DSG", version=VERSION,
                               higher_is_better=card.higher_is_better, prompt_set=card.prompt_set,
                               description=card.description)
        self._backend: Any = None
        self._device: torch.device | None = None

    @cached_property
    def vqa(self) -> ResolvedModel:
        return resolve_model(self.card.model("vqa"))

    def fingerprint(self) -> str:
        return self.card.metric_fingerprint(VERSION, vqa=self.vqa.fingerprint, backend=self.backend_name)

    def models_used(self) -> dict[str, dict[str, str]]:
        return {"vqa": self.vqa.record(backend=self.backend_name)}

    def setup(self, device: torch.device) -> None:
        if self._backend is not None and self._device == device:
            return
        from evalkit.metrics.tifa.vqa import load_vqa_backend

        with quiet_loading():
            self._backend = load_vqa_backend(self.backend_name, self.vqa.folder, device=device, dtype=self.dtype)
        self._device = device

    def prepare(self, item: ImageItem, image: Image.Image) -> Image.Image:
        questions_of(item.prompt.data, item.prompt.id)  # refused before the model runs
        return image.copy()  # the backend's own processor preprocesses, batched

    def score_batch(self, items: Sequence[ImageItem], prepared: Sequence[Image.Image]) -> list[list[Record]]:
        per_image = [questions_of(item.prompt.data, item.prompt.id) for item in items]
        answers = self._backend.answer(list(prepared), [[q.question for q in qs] for qs in per_image])
        return [[asdict(r) for r in score_item(item.prompt.id, qs, a)]
                for item, qs, a in zip(items, per_image, answers, strict=True)]

    def prompt_ratios(self, groups: Sequence[Sequence[Record]]) -> dict[str, Ratio]:
        """Headline: per prompt the mean over its questions (its images pooled); categories: micro."""
        ratios: dict[str, Ratio] = {"value": ([sum(float(r["score"]) for r in g) / len(g) if g else 0.0
                                               for g in groups], [1.0 if g else 0.0 for g in groups])}
        for kind in sorted({str(r["category"]) for g in groups for r in g}):
            ratios[f"category/{kind}"] = ([sum(float(r["score"]) for r in g if r["category"] == kind) for g in groups],
                                          [float(sum(r["category"] == kind for r in g)) for g in groups])
        return ratios

    def aggregate(self, records: Sequence[Record]) -> dict[str, Any]:
        if not records:
            return {"value": math.nan, "n": 0, "n_questions": 0}
        with_dep, without = prompt_scores(records), prompt_scores(records, "correct")
        by_category: dict[str, list[float]] = {}
        for r in records:
            by_category.setdefault(str(r["category"]), []).append(float(r["score"]))
        return {"value": math.fsum(with_dep) / len(with_dep), "n": len(with_dep), "n_questions": len(records),
                "stdev": statistics.stdev(with_dep) if len(with_dep) > 1 else math.nan,
                "without_dependency": math.fsum(without) / len(without),
                "accuracy_by_category": {k: math.fsum(v) / len(v) for k, v in sorted(by_category.items())},
                "backend": self.backend_name}
