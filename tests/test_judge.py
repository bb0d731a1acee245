"""`evalkit judge`: agreement of judges with TIFA v1.0's human ratings, published and scored here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from evalkit.errors import EvalkitError
from evalkit.judge.agreement import agreement, correlation
from evalkit.judge.annotations import ANNOTATIONS_SHA256, AnnotatedImage, annotations_dir, load_annotations
from evalkit.judge.validate import image_items, score_images
from evalkit.metrics.cards import read_card
from evalkit.metrics.context import NO_INPUTS
from evalkit.results.bootstrap import BootstrapSpec

QUICK = BootstrapSpec(resamples=40, seed=0)


def test_the_published_correlations_come_out_of_the_annotation_file() -> None:
    rows = load_annotations().images
    assert len(rows) == 800 and len({r.prompt_id for r in rows}) == 160
    human = [r.human for r in rows]
    prompts = [r.prompt_id for r in rows]
    # TIFA's paper, Table 3 (Pearson): mPLUG-large 0.597 > BLIP-2 0.559 > GIT-large 0.545.
    for judge, pearson in (("tifa_mplug-large", 0.597), ("tifa_blip2-flant5xl", 0.559), ("tifa_git-large", 0.545)):
        scores = [r.published[judge] for r in rows]
        result = agreement(judge, judge, scores, human, prompts, QUICK)
        assert round(result.correlations["pearson"].value, 3) == pearson
        assert result.correlations["spearman"].value == pytest.approx(stats.spearmanr(scores, human)[0], abs=1e-12)
        assert result.correlations["kendall"].value == pytest.approx(stats.kendalltau(scores, human)[0], abs=1e-12)
        low, high = result.correlations["pearson"].ci95
        assert low < pearson < high and high - low < 0.2
        assert (result.n_images, result.n_prompts) == (800, 160)


def test_intervals_resample_prompts_and_are_seeded() -> None:
    rng = np.random.default_rng(1)
    human = rng.normal(size=60)
    scores = human + rng.normal(scale=0.5, size=60)
    prompts = [f"p{i // 5}" for i in range(60)]
    first = agreement("j", "j", scores, human, prompts, QUICK)
    assert first == agreement("j", "j", scores, human, prompts, QUICK)  # same seed, same interval
    assert first != agreement("j", "j", scores, human, prompts, BootstrapSpec(40, seed=1))
    assert first.n_prompts == 12
    assert np.isnan(correlation("pearson", np.ones(5), np.arange(5.0)))  # a constant judge has no correlation


def test_an_edited_shipped_file_is_refused_and_a_users_file_is_read_as_given(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import evalkit.judge.annotations as annotations

    edited = tmp_path / "shipped"
    edited.mkdir()
    shutil.copy(annotations_dir() / annotations.ANNOTATIONS_FILE, edited / annotations.ANNOTATIONS_FILE)
    target = edited / annotations.ANNOTATIONS_FILE
    target.write_bytes(target.read_bytes().replace(b'"human_avg": 5.0', b'"human_avg": 4.0', 1))
    monkeypatch.setattr(annotations, "annotations_dir", lambda: edited)
    with pytest.raises(EvalkitError, match="sha256 differs"):
        load_annotations()
    own = load_annotations(target)  # the user's own ratings: read as given, their hash recorded
    assert len(own.images) == 800 and own.source == str(target.resolve()) and own.sha256 != ANNOTATIONS_SHA256
    (tmp_path / "bad.json").write_text('{"a": {"text_id": "x"}}', encoding="utf-8")
    with pytest.raises(EvalkitError, match="is not a human annotation file"):
        load_annotations(tmp_path / "bad.json")


def test_published_report_as_markdown_and_json(cli, tmp_path: Path) -> None:
    code, stdout, err = cli("judge", "published", "--resamples", "20", "--json", str(tmp_path / "r.json"),
                            "--markdown", str(tmp_path / "r.md"))
    assert code == 0, err
    assert "| TIFA, mPLUG-large VQA (the reference's default) | 0.597 [" in stdout
    assert (tmp_path / "r.md").read_text(encoding="utf-8") == stdout
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert report["schema"] == "evalkit.judge-agreement/1" and report["annotations"]["n_images"] == 800
    assert [j["judge"] for j in report["published"]][:3] == ["tifa_mplug-large", "tifa_blip2-flant5xl",
                                                             "tifa_git-large"]
    assert report["bootstrap"]["resamples"] == 20 and report["validated"] == []


def _tiny_tifa(tmp_path: Path):
    from evalkit.metrics.tifa.metric import TifaMetric
    from evalkit.tiny.clip import write_card
    from evalkit.tiny.tifa_models import write_tiny_git, write_tiny_mpnet

    write_tiny_git(tmp_path / "git")
    write_tiny_mpnet(tmp_path / "mpnet")
    card = write_card(tmp_path / "tifa.yaml", "tifa-tiny", "tifa", "tifa-v1.0-sample",
                      {"vqa": tmp_path / "git", "sentence": tmp_path / "mpnet"},
                      params={"vqa_backend": "git", "questions": "sample"})
    return TifaMetric(read_card(card), NO_INPUTS)


def test_a_tifa_card_scores_rated_images_through_its_own_contract(tmp_path: Path) -> None:
    """End to end on a tiny GIT: images rated by 'people' are scored per image (share of questions
    right, as the site shows it) and correlated. The two prompts are TIFA's sample (its questions ship)."""
    import torch
    from PIL import Image

    texts = {"coco_301091": "On a gray day a surfer carrying a white board walks on a beach.",
             "drawbench_52": "Three cats and two dogs sitting on the grass."}
    rng = np.random.default_rng(0)
    annotated = []
    for prompt_id, text in texts.items():
        for k in range(3):
            name = f"{prompt_id}_gen{k}.png"
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / name)
            annotated.append(AnnotatedImage(f"{prompt_id}_gen{k}", prompt_id, name, text, float(1 + k), {}))
    metric = _tiny_tifa(tmp_path)
    judged = score_images(metric, image_items(tmp_path, annotated), annotated, torch.device("cpu"))
    assert [j.image.key for j in judged] == [a.key for a in annotated]
    questions = metric.questions()
    for j in judged:  # a share of that prompt's questions
        asked = len(questions[j.image.prompt_id])
        assert 0.0 <= j.score <= 1.0 and j.score * asked == pytest.approx(round(j.score * asked))
    result = agreement("tifa-tiny", "tiny", [j.score for j in judged], [j.image.human for j in judged],
                       [j.image.prompt_id for j in judged], QUICK)
    assert result.n_images == 6 and result.n_prompts == 2
    (tmp_path / annotated[0].image_path).unlink()
    with pytest.raises(EvalkitError, match="1 of the 6 annotated images are not in"):
        image_items(tmp_path, annotated)
    wrong = [AnnotatedImage("x", "coco_301091", annotated[1].image_path, "a different text", 3.0, {})]
    with pytest.raises(EvalkitError, match="prompt text differs"):
        image_items(tmp_path, wrong)


def test_validate_on_the_command_line_with_a_users_ratings(cli, tmp_path: Path) -> None:
    """`evalkit judge validate CARD --images DIR --annotations FILE`, end to end on a tiny TIFA card."""
    from PIL import Image

    from evalkit.tiny.clip import write_card
    from evalkit.tiny.tifa_models import write_tiny_git, write_tiny_mpnet

    write_tiny_git(tmp_path / "git")
    write_tiny_mpnet(tmp_path / "mpnet")
    card = write_card(tmp_path / "tifa-tiny.yaml", "tifa-tiny", "tifa", "tifa-v1.0-sample",
                      {"vqa": tmp_path / "git", "sentence": tmp_path / "mpnet"},
                      params={"vqa_backend": "git", "questions": "sample"})
    texts = {"coco_301091": "On a gray day a surfer carrying a white board walks on a beach.",
             "drawbench_52": "Three cats and two dogs sitting on the grass."}
    images, rng, rated = tmp_path / "images", np.random.default_rng(3), {}
    images.mkdir()
    for prompt_id, text in texts.items():
        for k in range(3):
            name = f"{prompt_id}_{k}.jpg"
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(images / name)
            rated[f"{prompt_id}_{k}"] = {"text_id": prompt_id, "image_path": name, "text": text,
                                         "human_scores": [k + 1, k + 2], "human_avg": k + 1.5}
    ratings = tmp_path / "ratings.json"
    ratings.write_text(json.dumps(rated), encoding="utf-8")
    code, stdout, err = cli("judge", "validate", str(card), "--images", str(images), "--annotations", str(ratings),
                            "--resamples", "20", "--device", "cpu", "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    (row,) = report["validated"]
    assert row["judge"] == "tifa-tiny" and (row["n_images"], row["n_prompts"]) == (6, 2)
    assert report["published"] == []  # the user's file holds no published judge's scores
    assert report["annotations"]["source"] == str(ratings.resolve()) and f"| **{row['description']}** |" in stdout
    code, _, err = cli("judge", "validate", str(card), "--images", str(tmp_path / "nowhere"),
                       "--annotations", str(ratings))
    assert code == 2 and "is not a folder" in err


def test_a_report_of_stand_in_ratings_says_so_and_keeps_the_published_rows(tmp_path: Path) -> None:
    """The demo's report: judged images rated by a seeded stand-in, published rows from the shipped file."""
    from evalkit.judge.report import Validated, build_report, markdown, to_json
    from evalkit.judge.standin import STAND_IN_NOTE, UnratedImage, write_stand_in_ratings
    from evalkit.judge.validate import JudgedImage

    unrated = [UnratedImage(f"m_{p}_{k}", p, "text", f"m/{p}_{k}.png") for p in ("a", "b", "c") for k in range(2)]
    rated = write_stand_in_ratings(unrated, tmp_path / "ratings.json", seed=4)
    humans = [r.human for r in rated.images]
    assert all(1.0 <= h <= 5.0 for h in humans) and len(set(humans)) > 1
    again = write_stand_in_ratings(unrated, tmp_path / "again.json", seed=4)
    assert [r.human for r in again.images] == humans and again.sha256 == rated.sha256  # seeded
    judged = [JudgedImage(r, r.human / 5) for r in rated.images]  # a judge that agrees perfectly
    report = build_report(load_annotations(), rated, [Validated("j", "perfect judge", judged)], QUICK, STAND_IN_NOTE)
    assert report.validated[0].correlations["pearson"].value == pytest.approx(1.0)
    doc = to_json(report)
    assert doc["note"] == STAND_IN_NOTE and doc["annotations"]["n_images"] == 6
    assert doc["published_annotations"]["sha256"] == ANNOTATIONS_SHA256
    assert round(doc["published"][0]["pearson"]["value"], 3) == 0.597
    text = markdown(report)
    assert f"> **{STAND_IN_NOTE}**" in text and "against the ratings in" in text
    assert "| **perfect judge** | 1.000" in text
    plain = build_report(rated, rated, [], QUICK)
    assert "note" not in to_json(plain) and "published_annotations" not in to_json(plain)
    assert to_json(plain)["published"] == []  # stand-in ratings carry no published judge's scores
