"""VQA backends: the models that answer TIFA's questions about generated images.

TIFA asks ~6 questions about every image, 25,829 questions over 4,081 prompts per checkpoint,
so the backend is the expensive part of the metric. The reference (github.com/Yushi-Hu/tifa,
`tifascore/vqa_models.py`) answers one question per forward pass and re-encodes the image for
every question. Here the contract is: **each image is encoded once and its questions are
batched** — the vision tower runs once per image per `answer` call and the language side
generates the answers of many questions (of many images) in one batched `generate` call.
Decoding is deterministic (greedy for GIT; BLIP-2 keeps the reference's fixed beam search),
so an answer does not depend on which other images or questions share its batch beyond float
noise (padding changes the last bits of a padded row's arithmetic, never its masking).

A backend reproduces its reference model's prompt, length cap and decoding: what is reproduced
is documented per backend in `vqa_git` and `vqa_blip2`. The free-form answers go to
`tifa_scoring.score_questions`, which maps them onto the choices exactly as the reference does.

Loading goes through `load_vqa_backend`: a local folder, or a hub id at a revision resolved by
`evalkit.runtime.assets.resolve_hub_snapshot` (offline: the local cache only; a miss is one line that
names the model and the `hf download` command). Only safetensors weights are loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics.tifa.questions import Question
from evalkit.runtime.assets import resolve_hub_snapshot

# Rows (questions) per batched `generate` call. A soft cap: one image's questions always go
# into a single call, so that image is encoded once even if it has more questions than this.
DEFAULT_MAX_ROWS = 32
DEFAULT_REVISION = "main"
# What loading needs from a hub repository: configs, safetensors weights, tokenizer vocabularies
# (BERT's vocab.txt, T5's spiece.model, Qwen's merges.txt), chat templates (*.jinja in newer
# repositories). Pickled `pytorch_model*.bin` copies are never fetched.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]


@runtime_checkable
class VQABackend(Protocol):
    """Answers free-form questions about images.

    `answer(images, questions)` returns, for each image, one answer per question, in order.
    `choices` (same nesting as `questions`) is used only by backends that show the choices in
    their prompt (`shows_choices`): the reference does that for BLIP-2 alone, so the others
    ignore it and TIFA can pass it to every backend.
    """

    name: str
    shows_choices: bool

    def answer(
        self,
        images: Sequence[Image.Image],
        questions: Sequence[Sequence[str]],
        choices: Sequence[Sequence[Sequence[str]]] | None = None,
    ) -> list[list[str]]: ...


@dataclass(frozen=True)
class BackendSpec:
    """A model family (which backend class) and the checkpoint the TIFA reference uses for it."""

    family: str
    default_source: str | None


# The reference's model names (`vqa_models` in tifascore/vqa_models.py) with their checkpoints,
# plus the bare family names for any other checkpoint of that architecture (source required).
BACKENDS = MappingProxyType({
    "git-large": BackendSpec("git", "microsoft/git-large-vqav2"),
    "git-base": BackendSpec("git", "microsoft/git-base-vqav2"),
    "blip2-flant5xl": BackendSpec("blip2", "Salesforce/blip2-flan-t5-xl"),
    "git": BackendSpec("git", None),
    "blip2": BackendSpec("blip2", None),
    # not a reference model (issue 3): a modern open VLM; Qwen2-VL checkpoints load through it too
    "qwen2.5-vl": BackendSpec("qwen2.5-vl", "Qwen/Qwen2.5-VL-7B-Instruct"),
})


def load_vqa_backend(
    name: str,
    source: str | Path | None = None,
    revision: str = DEFAULT_REVISION,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> VQABackend:
    """Load backend `name` from `source` (a local folder or a hub id; default: the reference's
    checkpoint for that name) at `revision` (hub ids only; pin a commit for published numbers).

    float32 is the default because the reference runs GIT in float32; half precision is faster
    on GPUs but can flip near-tied answers.
    """
    spec = _spec(name)
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    if source is None:
        if spec.default_source is None:
            raise EvalkitError(f"the VQA backend {name!r} needs a checkpoint",
                               "pass a local folder or a hub id as the source")
        source = spec.default_source
    folder = model_folder(name, source, revision)
    if spec.family == "git":
        from evalkit.metrics.tifa.vqa_git import load_git

        return load_git(folder, name=name, device=device, dtype=dtype, max_rows=max_rows)
    if spec.family == "qwen2.5-vl":
        from evalkit.metrics.tifa.vqa_qwen import load_qwen_vl

        return load_qwen_vl(folder, name=name, device=device, dtype=dtype, max_rows=max_rows)
    from evalkit.metrics.tifa.vqa_blip2 import load_blip2

    return load_blip2(folder, name=name, device=device, dtype=dtype, max_rows=max_rows)


def answer_tifa_questions(
    backend: VQABackend, images: Sequence[Image.Image], questions: Sequence[Sequence[Question]]
) -> list[str]:
    """Free-form answers to TIFA questions (each image's `Question`s, choices passed along), flat
    in question order: the `free_form_answers` that `tifa_scoring.score_questions` takes."""
    texts = [[q.question for q in qs] for qs in questions]
    choices = [[q.choices for q in qs] for qs in questions]
    return [a for image_answers in backend.answer(images, texts, choices) for a in image_answers]


def _spec(name: str) -> BackendSpec:
    if name not in BACKENDS:
        raise EvalkitError(f"unknown VQA backend {name!r}", "choose one of " + ", ".join(BACKENDS))
    return BACKENDS[name]


def model_folder(name: str, source: str | Path, revision: str) -> Path:
    """The local folder that holds the checkpoint, with safetensors weights checked present.

    A local folder wins over a hub id of the same spelling. Errors name the backend, because
    the user asked for a metric, not for a repository.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        folder = path
        fetch_hint = "pass the folder of a saved checkpoint (save_pretrained writes model.safetensors)"
    else:
        try:
            folder = resolve_hub_snapshot(str(source), revision, allow_patterns=HUB_PATTERNS)
        except EvalkitError as e:
            raise EvalkitError(f"VQA model {name}: {e.problem}", e.hint) from e
        fetch_hint = f"run `hf download {source} --revision {revision}` where there is network (and copy HF_HOME here)"
    if not any(folder.glob("*.safetensors")):
        raise EvalkitError(f"VQA model {name}: {folder} holds no safetensors weights", fetch_hint)
    return folder


def check_request(
    images: Sequence[Image.Image],
    questions: Sequence[Sequence[str]],
    choices: Sequence[Sequence[Sequence[str]]] | None,
) -> None:
    """Refuse mismatched nesting up front: a silent zip would pair answers with wrong images."""
    if len(images) != len(questions):
        raise ValueError(f"{len(questions)} question lists for {len(images)} images; need one list per image")
    for i, qs in enumerate(questions):
        if isinstance(qs, str):
            raise TypeError(f"questions[{i}] is a string; pass a list of questions per image")
    if choices is None:
        return
    if len(choices) != len(questions) or any(len(c) != len(q) for c, q in zip(choices, questions, strict=True)):
        raise ValueError("choices must have the same nesting as questions: one list of choices per question")


def rgb(images: Sequence[Image.Image]) -> list[Image.Image]:
    """RGB copies, as the reference makes (`Image.open(path).convert('RGB')`) before preprocessing."""
    return [im if im.mode == "RGB" else im.convert("RGB") for im in images]


def image_groups(question_counts: Sequence[int], max_rows: int) -> list[list[int]]:
    """Images (by index) that can share one `generate` call: same number of questions, at most
    `max_rows` questions in all (at least one image per group, whatever its count).

    Equal counts matter for GIT, whose model tiles one image's features over its rows; images
    without questions are left out. Groups follow first appearance, so the plan is deterministic.
    """
    by_count: dict[int, list[int]] = {}
    for index, count in enumerate(question_counts):
        if count > 0:
            by_count.setdefault(count, []).append(index)
    groups = []
    for count, indices in by_count.items():
        per_call = max(1, max_rows // count)
        groups += [indices[start:start + per_call] for start in range(0, len(indices), per_call)]
    return groups


def chunks(n: int, size: int) -> list[range]:
    """Consecutive index ranges of at most `size` covering range(n)."""
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def padded(rows: Sequence[Sequence[int]], pad_id: int, side: str, device: torch.device | str = "cpu",
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded to one width on `side` ("left" or "right"), with the mask that hides the padding.

    Done here rather than by the tokenizer so the side cannot come from a checkpoint's tokenizer
    config: decoder-only models need left padding (the answer continues every row at its end),
    T5's encoder right padding (relative positions between real tokens must not change).
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    return ids.to(device), mask.to(device)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
