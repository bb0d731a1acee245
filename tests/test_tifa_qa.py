"""TIFA question file: sample, synthetic files, identity check, offline behaviour."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import git_blob_sha1
from evalkit.metrics.tifa.questions import (
    TIFA_QA_BLOB,
    TIFA_QA_FILENAME,
    TIFA_QA_HUB_DATASET,
    TIFA_QA_URL,
    Question,
    load_tifa_questions,
    sample_questions,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to resolve or connect fails at once, so a test cannot reach (or wait on) the net."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def empty_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def entry(prompt_id: str, question: str, answer: str = "yes", **extra: Any) -> dict[str, Any]:
    return {
        "id": prompt_id,
        "caption": "c",
        "question": question,
        "choices": ["yes", "no"],
        "answer": answer,
        "element_type": "object",
        "element": "thing",
        **extra,
    }


def write_qa(path: Path, entries: list[Any]) -> bytes:
    data = json.dumps(entries, indent=4).encode("utf-8")
    path.write_bytes(data)
    return data


def test_sample_questions() -> None:
    questions = sample_questions()
    assert questions.n_prompts == 2 and questions.n_questions == 19
    assert {k: len(v) for k, v in questions.items()} == {"coco_301091": 11, "drawbench_52": 8}
    assert questions["coco_301091"][0] == Question(
        "coco_301091", "is this a surfer?", ("yes", "no"), "yes", "animal/human", "surfer"
    )
    assert questions.prompts_without_questions == () and questions.unknown_prompt_ids == ()


def test_synthetic_file_grouping_order_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "qa.json"
    entries = [entry("a", "q1"), entry("b", "q2", "no"), entry("a", "q3"), entry("a", "q1")]
    write_qa(path, entries)
    questions = load_tifa_questions(path, expected_blob=None)
    assert isinstance(questions, dict)
    assert [q.question for q in questions["a"]] == ["q1", "q3", "q1"]  # a repeated question counts twice
    assert questions["b"][0].answer == "no" and questions["b"][0].choices == ("yes", "no")
    assert (questions.n_prompts, questions.n_questions) == (2, 4)
    assert questions.source == str(path)


def test_coverage_is_reported_not_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "qa.json"
    write_qa(path, [entry("a", "q"), entry("stray", "q")])
    with caplog.at_level(logging.WARNING, logger="evalkit.metrics.tifa.questions"):
        questions = load_tifa_questions(path, expected_blob=None, prompt_ids=["a", "b", "c"])
    assert questions.prompts_without_questions == ("b", "c")
    assert questions.unknown_prompt_ids == ("stray",)
    assert "2 prompt(s) have no TIFA questions" in caplog.text and "b, c" in caplog.text


def test_blob_hash_is_checked(tmp_path: Path) -> None:
    folder = tmp_path / "tifa_v1.0"
    folder.mkdir()
    data = write_qa(folder / TIFA_QA_FILENAME, [entry("a", "q")])
    # The right blob passes, from the file or from its folder.
    assert load_tifa_questions(folder, expected_blob=git_blob_sha1(data)).blob == git_blob_sha1(data)
    from_file = load_tifa_questions(str(folder / TIFA_QA_FILENAME), expected_blob=git_blob_sha1(data))
    assert from_file.n_questions == 1
    # The real file's blob id does not match a synthetic file: refused by default.
    with pytest.raises(EvalkitError) as excinfo:
        load_tifa_questions(folder)
    assert git_blob_sha1(data) in excinfo.value.problem and TIFA_QA_BLOB in excinfo.value.problem
    assert "--tifa-qa" in excinfo.value.hint


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"not": "a list"}, "non-empty JSON list"),
        ([], "non-empty JSON list"),
        ([{"id": "a", "question": "q"}], "entry 0 lacks one of the keys"),
        ([entry("a", "q", choices="yes")], "entry 0 has a wrong type"),
    ],
)
def test_malformed_files(tmp_path: Path, entries: Any, message: str) -> None:
    path = tmp_path / "qa.json"
    write_qa(path, entries)
    with pytest.raises(EvalkitError, match=message):
        load_tifa_questions(path, expected_blob=None)


def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(EvalkitError, match="does not exist") as excinfo:
        load_tifa_questions(tmp_path)
    assert str(tmp_path / TIFA_QA_FILENAME) in excinfo.value.problem


@pytest.mark.usefixtures("no_network", "empty_hub_cache")
def test_offline_without_cache_says_how_to_supply_the_file() -> None:
    start = time.monotonic()
    with pytest.raises(EvalkitError) as excinfo:
        load_tifa_questions()
    assert time.monotonic() - start < 2
    line = excinfo.value.one_line()
    assert "\n" not in line
    assert f"{TIFA_QA_FILENAME} is missing" in line and "offline mode" in line
    assert "--tifa-qa" in line and TIFA_QA_URL in line and TIFA_QA_HUB_DATASET in line


@pytest.mark.usefixtures("no_network", "empty_hub_cache")
def test_unreachable_hub_gives_the_same_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    start = time.monotonic()
    with pytest.raises(EvalkitError) as excinfo:
        load_tifa_questions()
    assert time.monotonic() - start < 5
    assert "could not be fetched" in excinfo.value.problem and "--tifa-qa" in excinfo.value.hint


@pytest.mark.usefixtures("no_network")
def test_offline_uses_a_cached_hub_copy(empty_hub_cache: Path) -> None:
    repo = empty_hub_cache / f"datasets--{TIFA_QA_HUB_DATASET.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    write_qa(snapshot / TIFA_QA_FILENAME, [entry("a", "q")])
    questions = load_tifa_questions(expected_blob=None)
    assert questions.n_questions == 1 and questions.source == str(snapshot / TIFA_QA_FILENAME)


def test_offline_flag_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from evalkit.runtime.assets import hub_offline

    assert hub_offline()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    assert not hub_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "True")
    assert hub_offline()
