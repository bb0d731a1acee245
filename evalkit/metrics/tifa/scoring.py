"""The scoring core of TIFA: free-form VQA answers → chosen choices → per-question records → aggregates.

TIFA numbers are only comparable with the published ones if every step matches the reference
implementation (github.com/Yushi-Hu/tifa, package `tifascore`), so this module reproduces it,
quirks included. What the reference does, and where:

* `vqa_models.VQAModel.multiple_choice_vqa`: the free-form answer is kept if it is one of the
  choices — plain `answer in choices`, so case-, space- and punctuation-sensitive, no
  normalisation at all. Otherwise `mc_sbert.SBERTModel.multiple_choice` maps it: the answer is
  embedded alone, the choices together in one padded batch (all-mpnet-base-v2, mean pooling over
  the attention mask, L2 normalised), and the choice with the largest dot product wins
  (`torch.argmax`, so the first of tied choices).
* `tifa_score.tifa_score_benchmark`: correct = `chosen == answer` (exact string equality);
  every question entry counts, so a question listed twice for a prompt counts twice in the
  prompt's mean and in its element type.
* Aggregates use the `statistics` module, not numpy: the per-caption score is
  `statistics.mean` of 0/1 ints (an exact mean: an `int` 1 or 0 when all agree, a correctly
  rounded float otherwise), `tifa_average` is `statistics.mean` over captions (macro),
  `tifa_stdev` is `statistics.stdev` over captions (sample, n-1 denominator) and
  `accuracy_by_type` is `statistics.mean` over all questions of a type (micro).
* The output's `question_details[prompt][question]` is keyed by question text: for a repeated
  question it keeps the first entry's fields but the last occurrence's VQA answers and score.

Deviation, on purpose: with a single prompt the reference's `statistics.stdev` raises
`StatisticsError`; here the stdev is NaN so a one-prompt smoke run still aggregates.

The model that answers the questions and the sentence embedding (`sentence_embed`) are
passed in, so this module is pure and the reference's own logged answers can be replayed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from evalkit.metrics.tifa.questions import Question
from evalkit.prompts.sets import Prompt

# Texts in, one row per text out; rows are compared by dot product (unit-length rows = cosine).
Embed = Callable[[list[str]], torch.Tensor]

# Prompt facts the reference's question entries carry after `element` (TIFA v1.0: COCO prompts only).
ENTRY_PROMPT_DATA_KEYS = ("coco_val_id",)


class ChoiceMappingError(ValueError):
    """A free-form answer is not one of the choices and no embedding was given to map it.

    Raised instead of guessing, because any other mapping would give scores that are not TIFA.
    """


def choose(answer: str, choices: Sequence[str], embed: Embed | None) -> str:
    """The choice the reference takes for a free-form VQA answer.

    An exact member of `choices` is taken as is and `embed` is not called (the expensive
    sentence model is then never needed). Anything else goes to the choice whose embedding has
    the largest dot product with the answer's, embedded in the reference's two calls (the answer
    alone, the choices as one batch), because batching changes padding and so the last bits.
    """
    if not choices:
        raise ValueError("a TIFA question needs at least one choice")
    if answer in choices:
        return answer
    if embed is None:
        raise ChoiceMappingError(
            f"the answer {answer!r} is not one of the choices {list(choices)!r}; "
            "mapping it needs a sentence embedding (sentence_embed.load_sentence_embedder)"
        )
    answer_vector = _embedded(embed, [answer])
    choice_vectors = _embedded(embed, list(choices))
    similarities = choice_vectors @ answer_vector.T
    return choices[int(torch.argmax(similarities))]


def _embedded(embed: Embed, texts: list[str]) -> torch.Tensor:
    vectors = embed(texts)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ValueError(f"embed returned shape {tuple(vectors.shape)} for {len(texts)} texts; want (n, dim)")
    return vectors.detach().cpu()


@dataclass(frozen=True)
class QuestionRecord(Question):
    """One question asked about one prompt's image, with its answers: the per-sample record metrics store.

    Aggregates are recomputed from these, so they hold everything the reference logs. The
    question's own fields come first, so a stored record is the question followed by its answers.
    """

    free_form_answer: str
    chosen: str
    correct: bool

    @property
    def score(self) -> int:
        """0/1 as the reference stores it (`int(mc_answer == answer)`); ints keep its exact means."""
        return int(self.correct)

    @property
    def source(self) -> str:
        return prompt_source(self.prompt_id)


def prompt_source(prompt_id: str) -> str:
    """The TIFA v1.0 source of a prompt id: its prefix (coco, partiprompt, paintskill, drawbench)."""
    return prompt_id.partition("_")[0]


@dataclass
class ChoiceMemo:
    """Mapping decisions remembered across calls, keyed by (answer, choices): a metric keeps one per
    loaded sentence model, so an answer seen on an earlier image ("two" for "how many ...?" with the
    same choices) is not embedded again. Exact, not approximate: a decision depends only on those
    texts, embedded in the reference's own two calls, so a repeated call would return the same.
    Bounded: past `limit` entries it starts afresh (a checkpoint has ~26K questions)."""

    limit: int = 100_000
    decisions: dict[tuple[str, tuple[str, ...]], str] = field(default_factory=dict)

    def choose(self, answer: str, choices: Sequence[str], embed: Embed | None) -> str:
        key = (answer, tuple(choices))
        if key not in self.decisions:
            if len(self.decisions) >= self.limit:
                self.decisions.clear()
            self.decisions[key] = choose(answer, choices, embed)
        return self.decisions[key]


def score_questions(
    questions: Iterable[Question] | Mapping[str, Sequence[Question]],
    free_form_answers: Sequence[str],
    embed: Embed | None = None,
    memo: ChoiceMemo | None = None,
) -> list[QuestionRecord]:
    """Score free-form answers, given in the order of `questions` (flattened prompt by prompt).

    Duplicated questions stay separate records: the reference counts them twice. Mapping
    decisions are remembered in `memo` (one for this call when none is given), which only saves
    time (`ChoiceMemo`).
    """
    flat = _flatten(questions)
    if len(flat) != len(free_form_answers):
        raise ValueError(f"{len(free_form_answers)} answers for {len(flat)} questions; need one per question")
    decisions = memo if memo is not None else ChoiceMemo()
    return [_record(question, free_form, decisions.choose(free_form, question.choices, embed))
            for question, free_form in zip(flat, free_form_answers, strict=True)]


def _flatten(questions: Iterable[Question] | Mapping[str, Sequence[Question]]) -> list[Question]:
    if isinstance(questions, Mapping):
        return [q for group in questions.values() for q in group]
    return list(questions)


def _record(question: Question, free_form: str, chosen: str) -> QuestionRecord:
    asked = {f.name: getattr(question, f.name) for f in fields(Question)}
    return QuestionRecord(**asked, free_form_answer=free_form, chosen=chosen, correct=chosen == question.answer)


@dataclass(frozen=True)
class TifaResult:
    """TIFA over a set of prompts, computed as the reference computes it.

    `per_prompt` and `accuracy_by_type` keep first-appearance order and the `statistics`
    module's types (an exact 1 stays the int 1), so the reference's JSON can be compared byte
    for byte. `by_source` (macro mean over the prompts of each source) is evalkit's addition.
    """

    tifa_average: float
    stdev: float
    per_prompt: dict[str, float]
    accuracy_by_type: dict[str, float]
    by_source: dict[str, float]
    n: int
    n_questions: int
    records: tuple[QuestionRecord, ...] = field(repr=False)


def aggregate(records: Iterable[QuestionRecord]) -> TifaResult:
    """Per prompt: mean over its questions; benchmark: macro mean and sample stdev over prompts;
    per element type: micro mean over questions (see the module docstring for the reference)."""
    records = tuple(records)
    if not records:
        raise ValueError("no TIFA records to aggregate")
    per_prompt = _means(_grouped_scores(records, lambda r: r.prompt_id))
    by_type = _means(_grouped_scores(records, lambda r: r.element_type))
    prompt_scores = list(per_prompt.values())
    return TifaResult(
        tifa_average=statistics.mean(prompt_scores),
        stdev=reference_stdev(prompt_scores),
        per_prompt=per_prompt,
        accuracy_by_type=by_type,
        by_source=_source_means(per_prompt),
        n=len(per_prompt),
        n_questions=len(records),
        records=records,
    )


def reference_stdev(values: Sequence[float]) -> float:
    """`statistics.stdev` (sample stdev, n-1) as the reference; NaN below two values, where it raises.

    Not numpy: `np.std` defaults to the population stdev, and even with ddof=1 it may differ
    in the last bit from the exact-arithmetic `statistics` result.
    """
    if len(values) < 2:
        return math.nan
    return statistics.stdev(values)


def _grouped_scores(records: Sequence[QuestionRecord], key: Callable[[QuestionRecord], str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for record in records:
        groups.setdefault(key(record), []).append(record.score)
    return groups


def _means(groups: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {name: statistics.mean(values) for name, values in groups.items()}


def _source_means(per_prompt: Mapping[str, float]) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for prompt_id, score in per_prompt.items():
        groups.setdefault(prompt_source(prompt_id), []).append(score)
    return _means(groups)


def to_reference_dict(result: TifaResult, prompts: Iterable[Prompt] | None = None) -> dict[str, Any]:
    """The dict `tifa_score_benchmark` returns, key for key and in its key order.

    Question entries of the reference also carry the prompt's caption and COCO id (copied from
    its question file); they come from `prompts` (e.g. the prompt set) and are left out without it.
    """
    by_id = {p.id: p for p in prompts} if prompts is not None else {}
    return {
        "tifa_average": result.tifa_average,
        "tifa_stdev": result.stdev,
        "accuracy_by_type": dict(result.accuracy_by_type),
        "question_details": _question_details(result.records, by_id),
        "caption_scores": dict(result.per_prompt),
    }


def _question_details(records: Iterable[QuestionRecord], prompts: Mapping[str, Prompt]) -> dict[str, dict[str, Any]]:
    """Keyed by prompt, then question text: a repeat keeps the first entry and overwrites its answers."""
    details: dict[str, dict[str, Any]] = {}
    for record in records:
        entries = details.setdefault(record.prompt_id, {})
        if record.question not in entries:
            entries[record.question] = _question_entry(record, prompts.get(record.prompt_id))
        entry = entries[record.question]
        entry["free_form_vqa"] = record.free_form_answer
        entry["multiple_choice_vqa"] = record.chosen
        entry["scores"] = record.score
    return details


def _question_entry(record: QuestionRecord, prompt: Prompt | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": record.prompt_id}
    if prompt is not None:
        entry["caption"] = prompt.text
    entry.update(
        question=record.question,
        choices=list(record.choices),
        answer=record.answer,
        element_type=record.element_type,
        element=record.element,
    )
    if prompt is not None:
        entry.update({k: prompt.data[k] for k in ENTRY_PROMPT_DATA_KEYS if k in prompt.data})
    return entry
