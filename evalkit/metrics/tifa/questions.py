"""The TIFA v1.0 question file: where it comes from, and proof that it is the right one.

TIFA scores are only comparable when every run asks the same 25,829 questions, so the file
is identified by the git blob id the upstream repository published for it, whatever route
it came by (a local path, or the hub dataset through `datasets`). The file is not shipped
with evalkit (it is large and the upstream licence note leaves it out); the 19-question
reference sample is, so TIFA can be demonstrated and tested with no download at all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import git_blob_sha1
from evalkit.prompts.sets import load_prompt_set, verified_file
from evalkit.runtime.assets import resolve_hub_file
from evalkit.runtime.datafiles import shipped_dir

TIFA_QA_FILENAME = "tifa_v1.0_question_answers.json"
TIFA_QA_BLOB = "6a563f9c157e5b2a24b9f4936edd3934a8a70add"
TIFA_QA_N_QUESTIONS = 25_829
TIFA_QA_URL = "https://raw.githubusercontent.com/Yushi-Hu/tifa/main/tifa_v1.0/tifa_v1.0_question_answers.json"
TIFA_QA_HUB_DATASET = "tifa-benchmark/tifav1.0"
TIFA_PROMPT_SET = "tifa-v1.0"
SAMPLE_PROMPT_SET = "tifa-v1.0-sample"
SAMPLE_QUESTIONS_FILE = "questions.json"
QUESTION_KEYS = ("id", "question", "choices", "answer", "element_type", "element")
SUPPLY_HINT = (
    f"download {TIFA_QA_URL} (or take it from the hub dataset {TIFA_QA_HUB_DATASET}) "
    f"and pass --tifa-qa PATH/TO/{TIFA_QA_FILENAME}"
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Question:
    """One multiple-choice question about the image generated for `prompt_id`."""

    prompt_id: str
    question: str
    choices: tuple[str, ...]
    answer: str
    element_type: str
    element: str


class TifaQuestions(dict[str, tuple[Question, ...]]):
    """Questions grouped by prompt id (file order kept, duplicates kept: the reference
    scores a repeated question twice), plus what the load found out about coverage.

    A plain dict to its users; the extra attributes exist so that a prompt without
    questions is reported instead of silently dropping out of the TIFA average.
    """

    def __init__(
        self,
        by_prompt: Mapping[str, tuple[Question, ...]],
        *,
        source: str,
        blob: str,
        prompts_without_questions: tuple[str, ...] = (),
        unknown_prompt_ids: tuple[str, ...] = (),
    ) -> None:
        super().__init__(by_prompt)
        self.source = source
        self.blob = blob
        self.prompts_without_questions = prompts_without_questions
        self.unknown_prompt_ids = unknown_prompt_ids

    @property
    def n_prompts(self) -> int:
        """How many prompt ids have at least one question."""
        return len(self)

    @property
    def n_questions(self) -> int:
        return sum(len(qs) for qs in self.values())


def load_tifa_questions(
    source: str | Path | None = None,
    *,
    expected_blob: str | None = TIFA_QA_BLOB,
    prompt_ids: Iterable[str] | None = None,
) -> TifaQuestions:
    """Load the TIFA questions from a local file or folder, or (source None) the hub.

    `expected_blob=None` skips the identity check; only tests with synthetic files should
    use it. Coverage is checked against `prompt_ids`, or against the tifa-v1.0 prompt set
    when the file is the real one.
    """
    path = _hub_file() if source is None else _local_file(Path(source).expanduser())
    if prompt_ids is None and expected_blob == TIFA_QA_BLOB:
        prompt_ids = [p.id for p in load_prompt_set(TIFA_PROMPT_SET)]
    return _load_file(path, expected_blob, prompt_ids)


def sample_questions() -> TifaQuestions:
    """The 19 reference sample questions shipped with the tifa-v1.0-sample prompt set.

    Their integrity is already pinned by the set's manifest, so no blob id is needed.
    """
    folder = shipped_dir("prompts") / SAMPLE_PROMPT_SET
    path = verified_file(folder, SAMPLE_QUESTIONS_FILE)
    return _load_file(path, None, [p.id for p in load_prompt_set(SAMPLE_PROMPT_SET)])


def _load_file(path: Path, expected_blob: str | None, prompt_ids: Iterable[str] | None) -> TifaQuestions:
    data = _read_bytes(path)
    blob = git_blob_sha1(data)
    if expected_blob is not None and blob != expected_blob:
        _fail(
            f"{path} is not the expected TIFA question file (git blob id {blob}, expected {expected_blob})",
            "the file was edited or is another version; " + SUPPLY_HINT,
        )
    by_prompt = _group(_parse(path, data), path)
    known = list(prompt_ids) if prompt_ids is not None else list(by_prompt)
    missing = tuple(i for i in known if i not in by_prompt)
    unknown = tuple(sorted(set(by_prompt) - set(known)))
    questions = TifaQuestions(
        by_prompt, source=str(path), blob=blob, prompts_without_questions=missing, unknown_prompt_ids=unknown
    )
    _report(questions)
    return questions


def _report(questions: TifaQuestions) -> None:
    logger.info(
        "TIFA questions: %d questions for %d prompts from %s",
        questions.n_questions,
        questions.n_prompts,
        questions.source,
    )
    if questions.prompts_without_questions:
        logger.warning(
            "%d prompt(s) have no TIFA questions and cannot be scored: %s",
            len(questions.prompts_without_questions),
            ", ".join(questions.prompts_without_questions[:10]),
        )
    if questions.unknown_prompt_ids:
        logger.warning(
            "%d prompt id(s) in the question file are not in the prompt set: %s",
            len(questions.unknown_prompt_ids),
            ", ".join(questions.unknown_prompt_ids[:10]),
        )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        _fail(f"cannot read the TIFA question file {path} ({e.strerror})", SUPPLY_HINT)


def _parse(path: Path, data: bytes) -> list[Any]:
    try:
        entries = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(f"{path} is not a valid JSON file ({e})", SUPPLY_HINT)
    if not isinstance(entries, list) or not entries:
        _fail(f"{path} should hold a non-empty JSON list of questions", SUPPLY_HINT)
    return entries


def _group(entries: list[Any], path: Path) -> dict[str, tuple[Question, ...]]:
    grouped: dict[str, list[Question]] = {}
    for i, entry in enumerate(entries):
        question = _question(entry, f"{path} entry {i}")
        grouped.setdefault(question.prompt_id, []).append(question)
    return {prompt_id: tuple(qs) for prompt_id, qs in grouped.items()}


def _question(entry: Any, where: str) -> Question:
    if not isinstance(entry, dict) or any(k not in entry for k in QUESTION_KEYS):
        _fail(f"{where} lacks one of the keys {', '.join(QUESTION_KEYS)}", SUPPLY_HINT)
    choices = entry["choices"]
    fields = [entry[k] for k in QUESTION_KEYS if k != "choices"]
    if not all(isinstance(v, str) for v in fields) or not (
        isinstance(choices, list) and choices and all(isinstance(c, str) for c in choices)
    ):
        _fail(f"{where} has a wrong type (want strings; choices: a list of strings)", SUPPLY_HINT)
    return Question(
        prompt_id=entry["id"],
        question=entry["question"],
        choices=tuple(choices),
        answer=entry["answer"],
        element_type=entry["element_type"],
        element=entry["element"],
    )


def _local_file(path: Path) -> Path:
    if path.is_dir():
        path = path / TIFA_QA_FILENAME
    if not path.is_file():
        _fail(f"the TIFA question file {path} does not exist", SUPPLY_HINT)
    return path


# ---------------------------------------------------------------------------------------
# The hub route


def _hub_file() -> Path:
    """The hub copy (downloaded when online, else the local cache), through evalkit.runtime.assets.

    Whatever the cause (offline mode, no route to the hub, a moved dataset), the user has the
    same choice, so every miss ends with the same advice: supply the file with --tifa-qa.
    """
    try:
        return resolve_hub_file(TIFA_QA_HUB_DATASET, TIFA_QA_FILENAME, repo_type="dataset")
    except EvalkitError as e:
        _fail(f"the TIFA v1.0 question file {TIFA_QA_FILENAME} is missing: {e.problem}", SUPPLY_HINT)


def _fail(problem: str, hint: str) -> NoReturn:
    raise EvalkitError(problem, hint)
