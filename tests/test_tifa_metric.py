"""TIFA through the metric API: tiny GIT + tiny MPNet, the 19 shipped sample questions."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from evalkit.errors import EXIT_USAGE
from evalkit.metrics.registry import create
from evalkit.metrics.tifa.answers import load_sentence_embedder
from evalkit.metrics.tifa.questions import sample_questions
from evalkit.metrics.tifa.scoring import aggregate, score_questions
from evalkit.metrics.tifa.vqa import load_vqa_backend
from evalkit.prompts.sets import load_prompt_set
from evalkit.scoring.engine import score_step
from evalkit.tiny.clip import write_card
from evalkit.tiny.tifa_models import write_tiny_git, write_tiny_mpnet


@pytest.fixture(scope="module")
def tifa_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tifa-models")
    return write_tiny_git(root / "git"), write_tiny_mpnet(root / "mpnet")


@pytest.fixture
def tifa_card(tmp_path, tifa_models):
    git, mpnet = tifa_models
    return write_card(tmp_path / "tifa-tiny.yaml", "tifa-tiny", "tifa", "tifa-v1.0-sample",
                      {"vqa": git, "sentence": mpnet}, params={"vqa_backend": "git", "questions": "sample"})


@pytest.fixture
def sample_step(generate, sd_dir, tmp_path):
    return generate(sd_dir, [load_prompt_set("tifa-v1.0-sample")], out=tmp_path / "run")[0].step_dir


def _one_question_at_a_time(step_dir, tifa_models):
    """The reference's loop: every question answered alone, then the reference-exact scoring."""
    git, mpnet = tifa_models
    backend = load_vqa_backend("git", git)
    embed = load_sentence_embedder(mpnet)
    questions = sample_questions()
    records = []
    for prompt_id, qs in questions.items():
        image = Image.open(step_dir / f"images/tifa-v1.0-sample/{prompt_id}_0.png").convert("RGB")
        answers = [backend.answer([image], [[q.question]], [[q.choices]])[0][0] for q in qs]
        records += score_questions(qs, answers, embed)
    return aggregate(records)


def test_tifa_metric_equals_the_per_question_loop(sample_step, tifa_card, tifa_models):
    result = score_step(sample_step, [create(str(tifa_card))], torch.device("cpu"), batch_size=2, quiet=True)[0]
    expected = _one_question_at_a_time(sample_step, tifa_models)
    assert result.values["n"] == 2 and result.values["n_questions"] == 19
    assert result.values["value"] == pytest.approx(float(expected.tifa_average), abs=1e-12)
    assert result.values["stdev"] == pytest.approx(float(expected.stdev), abs=1e-12)
    assert result.values["accuracy_by_type"] == pytest.approx({k: float(v) for k, v in
                                                               expected.accuracy_by_type.items()})


def test_tifa_records_are_per_question_and_batch_independent(sample_step, tifa_card):
    from evalkit.fileio.jsonl import read_rows

    score_step(sample_step, [create(str(tifa_card))], torch.device("cpu"), batch_size=1, quiet=True)
    store = next((sample_step / "scores" / "tifa-tiny").glob("*.jsonl"))
    one = {r["prompt_id"]: r["records"] for r in read_rows(store)}
    store.unlink()
    score_step(sample_step, [create(str(tifa_card))], torch.device("cpu"), batch_size=2, quiet=True)
    two = {r["prompt_id"]: r["records"] for r in read_rows(store)}
    assert one == two
    assert sum(len(v) for v in one.values()) == 19
    first = next(iter(one.values()))[0]
    assert set(first) == {"prompt_id", "question", "choices", "answer", "element_type", "element",
                          "free_form_answer", "chosen", "correct"}


def test_tifa_without_its_question_file_is_one_clear_line(cli, generate, sd_dir, small_sets, tmp_path):
    step_dir = generate(sd_dir, small_sets[:1], out=tmp_path / "tifa-run")[0].step_dir
    code, _, err = cli("score", str(step_dir), "--metrics", "tifa", "--quiet")
    assert code == EXIT_USAGE
    assert len(err.strip().splitlines()) == 1 and "--tifa-qa" in err


def test_card_dtype_selects_the_vqa_precision_and_is_checked(tifa_models, tmp_path):
    from evalkit.errors import EvalkitError

    git, mpnet = tifa_models
    models = {"vqa": git, "sentence": mpnet}
    params = {"vqa_backend": "git", "questions": "sample"}
    half = create(str(write_card(tmp_path / "half.yaml", "tifa-half", "tifa", "tifa-v1.0-sample", models,
                                 params={**params, "dtype": "bfloat16"})))
    full = create(str(write_card(tmp_path / "full.yaml", "tifa-full", "tifa", "tifa-v1.0-sample", models,
                                 params=params)))
    assert (half.dtype, full.dtype) == (torch.bfloat16, torch.float32)
    half.setup(torch.device("cpu"))
    assert next(half._backend.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(EvalkitError, match="unknown dtype 'fp8'"):
        create(str(write_card(tmp_path / "bad.yaml", "tifa-bad", "tifa", "tifa-v1.0-sample", models,
                              params={**params, "dtype": "fp8"})))
