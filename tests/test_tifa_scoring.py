"""TIFA scoring core: parity with the reference (tifascore) on its own logged answers, the
free-form → choice mapping, duplicates, the reference's statistics, and the MPNet embedder."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evalkit.errors import EvalkitError
from evalkit.metrics.tifa.answers import SentenceEmbedder, load_sentence_embedder, mean_pool
from evalkit.metrics.tifa.questions import Question, sample_questions
from evalkit.metrics.tifa.scoring import (
    ChoiceMappingError,
    QuestionRecord,
    aggregate,
    choose,
    prompt_source,
    reference_stdev,
    score_questions,
    to_reference_dict,
)
from evalkit.prompts.sets import load_prompt_set
from evalkit.tiny.tifa_models import write_tiny_mpnet as tiny_mpnet

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(os.environ.get("EVALKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"upstream data not at {SHARED}")
SAMPLE_RESULT = SHARED / "tifa_v1.0" / "sample" / "sample_evaluation_result.json"
DSG_MPLUG = SHARED / "tifa_v1.0" / "dsg_tifa160" / "mplug_tifa.csv"

# The reference's run on its sample (sample/sample_evaluation_result.json, mplug-large): the
# free-form answers it logged, in question order, and what it reported. Copied here so the
# parity check also runs without the upstream data; test_sample_constants_match_the_file
# keeps the copy honest.
SAMPLE_FREE_FORM = [
    *["yes", "surfer", "yes", "yes", "beach", "yes", "yes", "yes", "gray", "yes", "white"],  # coco_301091
    *["yes", "no", "yes", "grass", "yes", "3", "no", "0"],  # drawbench_52
]
SAMPLE_AVERAGE = 0.8125
SAMPLE_STDEV = 0.2651650429449553
SAMPLE_BY_TYPE = {"animal/human": 0.75, "object": 1, "location": 1, "activity": 1, "color": 1,
                  "counting": 0.3333333333333333}
SAMPLE_CAPTIONS = {"coco_301091": 1, "drawbench_52": 0.625}
# The one answer that is not a choice: mplug said "0" dogs, the reference's SBERT mapped it to
# "1" (logged as multiple_choice_vqa). all-mpnet-base-v2 cannot be downloaded in tests, so its
# logged decision is replayed through the embedding path by `recorded_embed`.
SAMPLE_MAPPED = {"0": "1"}


Embed = Callable[[list[str]], torch.Tensor]


def recorded_embed(decisions: dict[str, str], calls: list[list[str]] | None = None) -> Embed:
    """An embedding that reproduces logged mapping decisions: every text is a one-hot vector of
    a vocabulary, and a mapped answer gets the vector of the choice it was mapped to."""
    vocabulary: dict[str, int] = {}

    def embed(texts: list[str]) -> torch.Tensor:
        if calls is not None:
            calls.append(list(texts))
        ids = [vocabulary.setdefault(decisions.get(t, t), len(vocabulary)) for t in texts]
        return F.one_hot(torch.tensor(ids), num_classes=64).float()

    return embed


def refusing_embed(texts: list[str]) -> torch.Tensor:
    raise AssertionError(f"the embedding must not be needed here (asked for {texts})")


def table_embed(table: dict[str, list[float]], calls: list[list[str]]) -> Embed:
    def embed(texts: list[str]) -> torch.Tensor:
        calls.append(list(texts))
        return torch.tensor([table[t] for t in texts])

    return embed


def question(prompt_id: str, text: str, answer: str = "yes", choices: tuple[str, ...] = ("yes", "no"),
             element_type: str = "object") -> Question:
    return Question(prompt_id=prompt_id, question=text, choices=choices, answer=answer,
                    element_type=element_type, element="thing")


# ---------------------------------------------------------------------------------------
# Parity with the reference sample


def replay_sample() -> tuple[list[QuestionRecord], list[list[str]]]:
    calls: list[list[str]] = []
    records = score_questions(sample_questions(), SAMPLE_FREE_FORM, recorded_embed(SAMPLE_MAPPED, calls))
    return records, calls


def test_sample_replay_gives_the_reference_numbers() -> None:
    records, calls = replay_sample()
    result = aggregate(records)
    assert result.tifa_average == SAMPLE_AVERAGE
    assert result.stdev == SAMPLE_STDEV
    assert result.accuracy_by_type == SAMPLE_BY_TYPE
    assert result.per_prompt == SAMPLE_CAPTIONS
    # exact means keep the reference's types: an all-correct caption is the int 1, as in its JSON
    assert type(result.per_prompt["coco_301091"]) is int and type(result.accuracy_by_type["object"]) is int
    assert (result.n, result.n_questions) == (2, 19)
    assert result.by_source == {"coco": 1, "drawbench": 0.625}
    # the embedding was consulted for exactly one answer, in the reference's two calls
    assert calls == [["0"], ["1", "2", "3", "4"]]
    mapped = [r for r in records if r.free_form_answer != r.chosen]
    assert [(r.question, r.free_form_answer, r.chosen, r.correct) for r in mapped] == [
        ("how many dogs are in the picture?", "0", "1", False)
    ]


def test_sample_needs_the_embedding_for_exactly_one_answer() -> None:
    flat = [q for group in sample_questions().values() for q in group]
    outside = [(q.question, a) for q, a in zip(flat, SAMPLE_FREE_FORM, strict=True) if a not in q.choices]
    assert outside == [("how many dogs are in the picture?", "0")]
    with pytest.raises(ChoiceMappingError, match="'0' is not one of the choices"):
        score_questions(sample_questions(), SAMPLE_FREE_FORM, None)
    # every other answer is an exact choice: scoring them needs no model at all
    scored = score_questions(flat[:-1], SAMPLE_FREE_FORM[:-1], refusing_embed)
    assert all(r.chosen == r.free_form_answer for r in scored)


@needs_shared
def test_sample_constants_match_the_file() -> None:
    reference = json.loads(SAMPLE_RESULT.read_text(encoding="utf-8"))
    details = reference["question_details"]
    flat = [q for group in sample_questions().values() for q in group]
    assert [details[q.prompt_id][q.question]["free_form_vqa"] for q in flat] == SAMPLE_FREE_FORM
    assert {e["free_form_vqa"]: e["multiple_choice_vqa"] for d in details.values() for e in d.values()
            if e["free_form_vqa"] != e["multiple_choice_vqa"]} == SAMPLE_MAPPED
    assert (reference["tifa_average"], reference["tifa_stdev"]) == (SAMPLE_AVERAGE, SAMPLE_STDEV)
    assert reference["accuracy_by_type"] == SAMPLE_BY_TYPE and reference["caption_scores"] == SAMPLE_CAPTIONS


@needs_shared
def test_sample_replay_reproduces_the_reference_json_byte_for_byte() -> None:
    records, _ = replay_sample()
    ours = to_reference_dict(aggregate(records), load_prompt_set("tifa-v1.0-sample"))
    # tifa_test.py wrote the file with json.dump(results, f, indent=4): same keys, order, types
    assert json.dumps(ours, indent=4) == SAMPLE_RESULT.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------
# choose: the free-form → choice mapping


def test_exact_choice_is_taken_without_the_embedding() -> None:
    assert choose("yes", ["yes", "no"], refusing_embed) == "yes"
    assert choose("3", ("1", "2", "3", "4"), None) == "3"


@pytest.mark.parametrize("answer", ["Yes", " yes", "yes.", "yes "])
def test_membership_is_exact_no_case_or_space_folding(answer: str) -> None:
    with pytest.raises(ChoiceMappingError):
        choose(answer, ["yes", "no"], None)
    calls: list[list[str]] = []
    table = {answer: [1.0, 0.1], "yes": [0.9, 0.0], "no": [0.0, 1.0]}
    assert choose(answer, ["yes", "no"], table_embed(table, calls)) == "yes"
    assert calls == [[answer], ["yes", "no"]]


def test_nearest_choice_by_dot_product_and_first_of_ties() -> None:
    calls: list[list[str]] = []
    table = {"pale green": [0.6, 0.8, 0.0], "black": [0.0, 0.0, 1.0], "green": [0.0, 1.0, 0.0],
             "yellow": [1.0, 0.0, 0.0], "brown": [0.0, 1.0, 0.0]}
    embed = table_embed(table, calls)
    assert choose("pale green", ["black", "green", "yellow", "brown"], embed) == "green"
    # "green" and "brown" tie: torch.argmax, as in the reference, takes the first
    assert choose("pale green", ["black", "brown", "yellow", "green"], embed) == "brown"
    assert choose("pale green", ["yellow", "black"], embed) == "yellow"


def test_choose_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="at least one choice"):
        choose("yes", [], None)
    with pytest.raises(ValueError, match="want \\(n, dim\\)"):
        choose("maybe", ["yes", "no"], lambda texts: torch.zeros(3))


def test_mapping_is_computed_once_per_answer_and_choices() -> None:
    calls: list[list[str]] = []
    embed = recorded_embed({"two": "2"}, calls)
    qs = [question("p_1", f"q{i}", answer="2", choices=("1", "2", "3")) for i in range(3)]
    records = score_questions(qs, ["two", "two", "2"], embed)
    assert [r.chosen for r in records] == ["2", "2", "2"] and all(r.correct for r in records)
    assert calls == [["two"], ["1", "2", "3"]]


def test_a_memo_shared_across_images_maps_each_answer_once_with_the_same_records() -> None:
    """TIFA keeps one ChoiceMemo per sentence model, so an answer seen on an earlier image is not
    embedded again; the records are those of scoring each image on its own."""
    from evalkit.metrics.tifa.scoring import ChoiceMemo

    per_image = [[question("p_1", "q0", answer="2", choices=("1", "2", "3")), question("p_1", "q1")],
                 [question("p_2", "q0", answer="3", choices=("1", "2", "3")), question("p_2", "q1", answer="no")]]
    answers = [["two", "nope"], ["two", "nope"]]
    decisions = {"two": "2", "nope": "no"}
    alone_calls: list[list[str]] = []
    pairs = list(zip(per_image, answers, strict=True))
    alone = [score_questions(qs, a, recorded_embed(decisions, alone_calls)) for qs, a in pairs]
    memo, shared_calls = ChoiceMemo(), []
    shared = [score_questions(qs, a, recorded_embed(decisions, shared_calls), memo) for qs, a in pairs]
    assert shared == alone
    assert [r.correct for rs in shared for r in rs] == [True, False, False, True]
    assert len(alone_calls) == 8 and shared_calls == alone_calls[:4]  # the second image embeds nothing
    small = ChoiceMemo(limit=1)  # bounded: full, it starts afresh and still decides the same
    assert [score_questions(qs, a, recorded_embed(decisions), small) for qs, a in pairs] == alone
    assert len(small.decisions) == 1


# ---------------------------------------------------------------------------------------
# Records and aggregates


def test_duplicate_questions_count_twice() -> None:
    qs = [question("coco_1", "is there a dog?"), question("coco_1", "is there a dog?"),
          question("coco_1", "is there a cat?", element_type="animal/human"),
          question("drawbench_2", "is it red?", element_type="color")]
    grouped = {"coco_1": tuple(qs[:3]), "drawbench_2": (qs[3],)}  # as load_tifa_questions returns them
    for given in (qs, grouped):
        result = aggregate(score_questions(given, ["yes", "yes", "no", "no"]))
        assert result.per_prompt["coco_1"] == pytest.approx(2 / 3)  # not 1/2: the repeat counts again
        assert result.accuracy_by_type == {"object": 1, "animal/human": 0, "color": 0}
        assert result.n_questions == 4 and result.n == 2
    details = to_reference_dict(result)["question_details"]["coco_1"]
    assert list(details) == ["is there a dog?", "is there a cat?"]  # keyed by text, as the reference
    # without prompts there is no caption / coco_val_id; the rest in the reference's key order
    assert list(details["is there a dog?"]) == ["id", "question", "choices", "answer", "element_type", "element",
                                                "free_form_vqa", "multiple_choice_vqa", "scores"]


def test_repeated_question_entry_keeps_first_fields_and_last_answers() -> None:
    first = question("coco_1", "how many?", answer="2", choices=("1", "2"))
    again = question("coco_1", "how many?", answer="1", choices=("1", "2"))
    result = aggregate(score_questions([first, again], ["2", "2"]))
    entry = to_reference_dict(result)["question_details"]["coco_1"]["how many?"]
    assert (entry["answer"], entry["multiple_choice_vqa"], entry["scores"]) == ("2", "2", 0)
    assert result.per_prompt["coco_1"] == 0.5


def test_type_accuracy_is_micro_and_average_is_macro() -> None:
    qs = [question("coco_1", f"q{i}") for i in range(4)] + [question("partiprompt_2", "q")]
    result = aggregate(score_questions(qs, ["yes", "yes", "yes", "no", "no"]))
    assert result.accuracy_by_type == {"object": 0.6}  # 3 of 5 questions
    assert result.tifa_average == 0.375  # mean of 0.75 and 0
    assert result.by_source == {"coco": 0.75, "partiprompt": 0}


def test_stdev_is_the_sample_stdev_of_the_statistics_module() -> None:
    correct_of = [(8, 8), (5, 8), (1, 5), (4, 4), (6, 7), (1, 3), (2, 4)]
    qs, answers = [], []
    for p, (k, n) in enumerate(correct_of):
        qs += [question(f"paintskill_{p}", f"q{i}") for i in range(n)]
        answers += ["yes"] * k + ["no"] * (n - k)
    result = aggregate(score_questions(qs, answers))
    values = list(result.per_prompt.values())
    assert values == [k / n for k, n in correct_of]
    assert result.stdev == statistics.stdev(values)
    assert result.stdev == pytest.approx(float(np.std(values, ddof=1)), rel=1e-14)
    assert not math.isclose(result.stdev, float(np.std(values)), rel_tol=1e-3)  # not the population stdev
    assert result.tifa_average == statistics.mean(values)


def test_single_prompt_stdev_is_nan_where_the_reference_raises() -> None:
    with pytest.raises(statistics.StatisticsError):
        statistics.stdev([0.5])
    assert math.isnan(reference_stdev([0.5]))
    result = aggregate(score_questions([question("coco_1", "q")], ["yes"]))
    assert result.tifa_average == 1 and math.isnan(result.stdev)


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="1 answers for 2 questions"):
        score_questions([question("coco_1", "a"), question("coco_1", "b")], ["yes"])
    with pytest.raises(ValueError, match="no TIFA records"):
        aggregate([])
    assert [prompt_source(i) for i in ("coco_1", "partiprompt_7", "paintskill_3", "drawbench_52", "x")] == [
        "coco", "partiprompt", "paintskill", "drawbench", "x"]


# ---------------------------------------------------------------------------------------
# TIFA-160 answers logged by DSG (j-min/DSG vqa_answers_release/mplug_tifa.csv)


def read_dsg_answers(path: Path) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(t2i model, item id) -> [(question, answer)] in file order (the question file's order)."""
    images: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            images[(row["t2i_model"], row["item_id"])].append((row["question"], row["answer"]))
    return images


YES_NO_OPENERS = ("is", "are", "does", "do")


def yes_no_positions(images: dict[tuple[str, str], list[tuple[str, str]]]) -> dict[str, list[int]]:
    """Questions that are yes/no ones: worded so, and only ever answered yes or no.

    The TIFA question file with the choices is not available offline; TIFA's yes/no questions
    have the gold answer "yes" by construction (as in its sample; DSG's scoring assumes it too).
    """
    answers: dict[tuple[str, int], set[str]] = defaultdict(set)
    for (_, item), qa in images.items():
        for i, (text, answer) in enumerate(qa):
            if text.split()[0].lower() in YES_NO_OPENERS:
                answers[(item, i)].add(answer)
    positions: dict[str, list[int]] = defaultdict(list)
    for (item, i), seen in sorted(answers.items()):
        if seen <= {"yes", "no"}:
            positions[item].append(i)
    return positions


@needs_shared
def test_dsg_tifa160_mplug_replay_per_image_scores() -> None:
    images = read_dsg_answers(DSG_MPLUG)
    positions = yes_no_positions(images)
    t2i_models = sorted({model for model, _ in images})
    assert len(t2i_models) == 7 and len(images) == 7 * 160
    n_checked = 0
    for model in t2i_models:
        items = sorted(item for m, item in images if m == model)
        qs, answers, expected = [], [], {}
        for item in items:
            kept = [images[(model, item)][i] for i in positions.get(item, [])]
            if not kept:
                continue
            qs += [question(item, text) for text, _ in kept]
            answers += [answer for _, answer in kept]
            expected[item] = sum(answer == "yes" for _, answer in kept) / len(kept)  # independent
        result = aggregate(score_questions(qs, answers, refusing_embed))
        assert result.per_prompt == expected  # exact: both are correctly rounded k/n
        assert result.tifa_average == pytest.approx(math.fsum(expected.values()) / len(expected), rel=1e-12)
        assert result.stdev == pytest.approx(float(np.std(list(expected.values()), ddof=1)), rel=1e-12)
        n_checked += result.n_questions
    assert n_checked > 7 * 600  # most TIFA-160 questions are yes/no ones


@needs_shared
def test_dsg_logged_answers_are_free_form_not_mapped() -> None:
    """A mapped answer is one of at most four choices; DSG's logs hold raw model output."""
    images = read_dsg_answers(DSG_MPLUG)
    distinct: dict[tuple[str, int], set[str]] = defaultdict(set)
    for (_, item), qa in images.items():
        for i, (_, answer) in enumerate(qa):
            distinct[(item, i)].add(answer)
    assert sum(len(seen) > 4 for seen in distinct.values()) >= 10
    assert any("question is no toilet" in seen for seen in distinct.values())


# ---------------------------------------------------------------------------------------
# The sentence embedder on a tiny random MPNet


WORDS = ["gray", "blue", "red", "black", "white", "yes", "no", "dog", "cat", "grass", "the", "a", "big"]


def write_tiny_mpnet(folder: Path) -> Path:
    """A random 2-layer MPNet and a WordPiece tokenizer (lower-casing, like all-mpnet-base-v2's)."""
    return tiny_mpnet(folder, WORDS)


@pytest.fixture(scope="module")
def tiny_embedder(tmp_path_factory: pytest.TempPathFactory) -> SentenceEmbedder:
    return load_sentence_embedder(write_tiny_mpnet(tmp_path_factory.mktemp("tiny-mpnet")))


def unpadded_mean(embedder: SentenceEmbedder, text: str) -> torch.Tensor:
    """Independent pooling: one text, no padding, plain mean over its tokens."""
    ids = torch.tensor([embedder.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return embedder.model(input_ids=ids).last_hidden_state[0].mean(0)


def test_embedder_rows_are_unit_mean_pooled_and_padding_free(tiny_embedder: SentenceEmbedder) -> None:
    texts = ["the big black dog", "a", "gray grass", "zebra 42"]
    vectors = tiny_embedder(texts)
    assert vectors.shape == (4, 32) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(4), atol=1e-6)
    for text, row in zip(texts, vectors, strict=True):
        assert torch.allclose(row, F.normalize(unpadded_mean(tiny_embedder, text), dim=0), atol=1e-5)
    assert tiny_embedder.revision is None  # a local folder


def test_mean_pool_ignores_masked_positions() -> None:
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.equal(mean_pool(tokens, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))
    assert torch.equal(mean_pool(tokens, torch.tensor([[0, 0, 0]])), torch.zeros(1, 2))  # floor, no NaN


def test_choose_with_the_tiny_mpnet(tiny_embedder: SentenceEmbedder) -> None:
    choices = ["blue", "gray", "red", "black"]
    # not an exact choice (case matters), but the tokenizer lower-cases: same tokens as "gray"
    assert choose("Gray", choices, tiny_embedder) == "gray"
    for answer in ["the big dog", "white", "cat 7"]:
        target = unpadded_mean(tiny_embedder, answer)
        cosines = [float(F.cosine_similarity(target, unpadded_mean(tiny_embedder, c), dim=0)) for c in choices]
        assert choose(answer, choices, tiny_embedder) == choices[int(np.argmax(cosines))]


def test_hub_model_missing_offline_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(EvalkitError, match="not in the local Hugging Face cache"):
        load_sentence_embedder("sentence-transformers/all-mpnet-base-v2", "main")
