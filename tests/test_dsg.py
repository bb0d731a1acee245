"""DSG: the reference's scoring replayed on its own released answers, its quirks, and the metric on a tiny VQA.

The replay: j-min/DSG released mPLUG-large's answers to the DSG-1k questions on Stable Diffusion 2.1's
images (`prompts/upstream/dsg/mplug_dsg.csv`, copied unchanged). `parity/ref_dsg.py` ran the repository's
own `data_utils` + `calc_vqa_score` on them (tests/golden/dsg/mplug-large-sd2dot1.json, with the commit);
evalkit's scoring of the same answers against the shipped dsg-1k questions must give every item's score
exactly, and the script's per-category means.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.metrics.dsg import DsgQuestion, parse_dependencies, questions_of, score_item
from evalkit.metrics.registry import create
from evalkit.prompts.sets import load_prompt_set
from evalkit.scoring.engine import score_step
from evalkit.tiny.clip import write_card
from evalkit.tiny.tifa_models import write_tiny_git

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "dsg" / "mplug-large-sd2dot1.json"
ANSWERS = REPO / "prompts" / "upstream" / "dsg" / "mplug_dsg.csv"
# scripts/t2i_eval_dsg1k.py's get_data_category, by item prefix
CATEGORY = {"tifa160": "tifa", "stanford_paragraph": "paragraph", "localized_narratives": "paragraph",
            "countbench": "count", "vrd": "relation", "diffusiondb": "real_user", "midjourney": "real_user",
            "posescript": "pose", "whoops": "defying", "drawtext": "text"}


def _released_answers() -> dict[str, dict[int, str]]:
    answers: dict[str, dict[int, str]] = defaultdict(dict)
    with open(ANSWERS, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["t2i_model"] == "sd2dot1":
                answers[row["item_id"]][int(row["question_id"])] = row["answer"]
    return answers


def test_replaying_the_released_answers_gives_the_references_scores():
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    answers = _released_answers()
    prompts = load_prompt_set("dsg-1k")
    assert len(prompts) == 1060 and sum(len(p.data["dsg"]) for p in prompts) == 8182
    ours: dict[str, float] = {}
    for prompt in prompts:
        questions = questions_of(prompt.data, prompt.id)
        records = score_item(prompt.id, questions, [answers[prompt.id].get(q.id, "") for q in questions])
        ours[prompt.id] = sum(r.score for r in records) / len(records)
    assert ours == {k: v["with_dependency"] for k, v in golden["items"].items()}
    by_category: dict[str, list[float]] = defaultdict(list)
    for item_id, score in ours.items():
        by_category[CATEGORY[prompts.by_id(item_id).tags[0]]].append(score)
        by_category["all"].append(score)
    for category, scores in by_category.items():
        assert math.fsum(scores) / len(scores) == pytest.approx(golden["categories"][category]["score"], abs=1e-12)
    assert golden["categories"]["all"]["score"] == pytest.approx(0.8305, abs=5e-5)  # DSG-1k, mPLUG-large, SD2.1


def _q(qid: int, dependency: str) -> DsgQuestion:
    return DsgQuestion(qid, f"q{qid}?", dependency, "entity", "whole")


def test_a_child_of_a_no_is_zeroed_and_parent_zero_means_none():
    questions = [_q(1, "0"), _q(2, "1"), _q(3, "1,2"), _q(4, "0")]
    records = score_item("p", questions, ["no", "yes", "yes", "yes"])
    assert [r.score for r in records] == [0.0, 0.0, 0.0, 1.0] and [r.valid for r in records] == [True, False,
                                                                                                  False, True]
    assert [r.correct for r in records] == [False, True, True, True]


def test_an_unparsable_row_drops_the_whole_items_dependencies_as_the_reference_does():
    questions = [_q(1, "0"), _q(2, "1"), _q(5, "1, right")]
    assert parse_dependencies(questions) == {}
    assert [r.score for r in score_item("p", questions, ["no", "yes", "yes"])] == [0.0, 1.0, 1.0]
    shipped = [p for p in load_prompt_set("dsg-1k") if not parse_dependencies(questions_of(p.data, p.id))]
    assert len(shipped) == 8  # the 10 upstream rows such as "5, right" are in 8 items


def test_answers_must_be_exactly_yes():
    records = score_item("p", [_q(1, "0"), _q(2, "0"), _q(3, "0")], ["yes", "Yes", "yes."])
    assert [r.score for r in records] == [1.0, 0.0, 0.0]


def test_the_metric_scores_dsg_prompts_with_a_tiny_vqa(generate, sd_dir, tmp_path):
    prompts = load_prompt_set("dsg-1k").head(3)
    step_dir = generate(sd_dir, [prompts], out=tmp_path / "run")[0].step_dir
    git = write_tiny_git(tmp_path / "tiny-git")
    card = write_card(tmp_path / "dsg-tiny.yaml", "dsg-tiny", "dsg", "dsg-1k", {"vqa": git},
                      params={"vqa_backend": "git"})
    result = score_step(step_dir, [create(str(card))], torch.device("cpu"), quiet=True)[0]
    n_questions = sum(len(p.data["dsg"]) for p in prompts)
    assert result.n_images == 3 and result.values["n_questions"] == n_questions
    assert 0.0 <= result.values["value"] <= result.values["without_dependency"] <= 1.0
    rows = [json.loads(line) for line in next((step_dir / "scores" / "dsg-tiny").glob("*.jsonl")).read_text()
            .splitlines()]
    first = rows[0]["records"][0]
    assert set(first) == {"prompt_id", "id", "question", "category", "detail", "answer", "correct", "valid", "score"}


def test_a_prompt_without_questions_is_one_line(tmp_path):
    git = write_tiny_git(tmp_path / "tiny-git")
    card = write_card(tmp_path / "dsg-tiny.yaml", "dsg-tiny", "dsg", "dsg-1k", {"vqa": git},
                      params={"vqa_backend": "git"})
    create(str(card))
    with pytest.raises(EvalkitError, match="has no DSG questions"):
        questions_of({}, "coco_1")
