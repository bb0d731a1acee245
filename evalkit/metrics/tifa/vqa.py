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

Backends are declared rows (`BACKENDS`: name → its family's loader and default checkpoint) and
share one answer loop (`BatchedVQA.answer`: plan calls of whole images, encode each call's images
once, one prompt row per question, one batched generate, decode); a family supplies only those
model-specific parts. A backend reproduces its reference model's prompt, length cap and decoding:
what is reproduced is documented per family in `vqa_git`, `vqa_blip2`, `vqa_mplug` and `vqa_qwen`. The free-form
answers go to `tifa_scoring.score_questions`, which maps them onto the choices exactly as the
reference does.

Loading goes through `load_vqa_backend`: a local folder, or a hub id at a revision resolved by
`evalkit.runtime.assets.resolve_hub_snapshot` (offline: the local cache only; a miss is one line that
names the model and the `hf download` command). Only safetensors weights are loaded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics.models import HUB_PATTERNS
from evalkit.metrics.tifa.questions import Question
from evalkit.runtime.assets import resolve_hub_snapshot
from evalkit.runtime.imports import import_object

# Rows (questions) per batched `generate` call. A soft cap: one image's questions always go
# into a single call, so that image is encoded once even if it has more questions than this.
DEFAULT_MAX_ROWS = 32
DEFAULT_REVISION = "main"


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


class BatchedVQA(ABC):
    """A VQA model's own parts, and the one answer loop every backend shares.

    The loop (`answer`) plans calls of whole images (`plan`: an image's questions always share one
    call, so it is encoded once; at most `max_rows` rows per call unless one image alone has more),
    then per call: the images through `encode` once, one prompt row per question (`prompt`, image-
    major: the call's first image's questions, then the next image's), one batched `generate` over
    the rows and `decode` of its output, in row order. Only those four parts and, where the
    architecture needs it, the plan differ between models; a backend that reproduces its
    reference says in its module what each part reproduces.
    """

    name: str
    shows_choices: bool
    max_rows: int
    model: Any  # the transformers model (load_vqa_backend moves it to the device)

    @abstractmethod
    def encode(self, images: Sequence[Image.Image]) -> Any:
        """The call's (RGB) images prepared once: preprocessed, and encoded where the model allows it."""

    @abstractmethod
    def prompt(self, encoded: Any, image: int, question: str, choices: Sequence[str]) -> list[int]:
        """The token ids of the row that asks `question` about the call's image number `image`."""

    @abstractmethod
    def generate(self, encoded: Any, images: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """One batched generation over the rows (row r asks about the call's image `images[r]`), in row order."""

    @abstractmethod
    def decode(self, generated: torch.Tensor, prompts: Sequence[Sequence[int]]) -> list[str]:
        """The answer text of every row of `generate`'s output."""

    def plan(self, question_counts: Sequence[int]) -> list[list[int]]:
        """Images (by index) per call; by default consecutive images packed up to `max_rows` rows."""
        return packs(question_counts, self.max_rows)

    def answer(
        self,
        images: Sequence[Image.Image],
        questions: Sequence[Sequence[str]],
        choices: Sequence[Sequence[Sequence[str]]] | None = None,
    ) -> list[list[str]]:
        """Free-form answers per image; `choices` reach the prompt only where the model shows them."""
        check_request(images, questions, choices)
        answers: list[list[str]] = [[] for _ in images]
        with torch.inference_mode():
            for call in self.plan([len(qs) for qs in questions]):
                encoded = self.encode(rgb([images[i] for i in call]))
                rows = [(image, question, choices[index][j] if choices is not None else ())
                        for image, index in enumerate(call) for j, question in enumerate(questions[index])]
                prompts = [self.prompt(encoded, image, question, shown) for image, question, shown in rows]
                texts = self.decode(self.generate(encoded, [image for image, _, _ in rows], prompts), prompts)
                position = 0
                for index in call:
                    answers[index] = texts[position:position + len(questions[index])]
                    position += len(questions[index])
        return answers


@dataclass(frozen=True)
class Family:
    """A VQA model architecture: its loader, and how its checkpoints are named in errors."""

    # "package.module:function", called as (CheckpointFolder, *, dtype, max_rows) -> BatchedVQA on the CPU;
    # imported on use, so naming a backend never loads another family's code.
    loader: str
    label: str  # "GIT", "BLIP-2", ...
    holds: str  # what a loadable checkpoint folder of the family holds


@dataclass(frozen=True)
class BackendSpec:
    """A declared VQA backend: its model family and the checkpoint the reference uses for it."""

    family: Family
    default_source: str | None


GIT = Family("evalkit.metrics.tifa.vqa_git:load_git", "GIT", "config, tokenizer, preprocessor, weights")
BLIP2 = Family("evalkit.metrics.tifa.vqa_blip2:load_blip2", "BLIP-2", "config, tokenizer, preprocessor, weights")
MPLUG = Family("evalkit.metrics.tifa.vqa_mplug:load_mplug", "mPLUG",
               "config.json, model.safetensors and vocab.txt, as evalkit.metrics.tifa.mplug_convert writes them")
QWEN_VL = Family("evalkit.metrics.tifa.vqa_qwen:load_qwen_vl", "Qwen2.5-VL or Qwen2-VL",
                 "config, tokenizer, processor, weights")

# The reference's model names (`vqa_models` in tifascore/vqa_models.py) with their checkpoints,
# plus the bare family names for any other checkpoint of that architecture (source required).
BACKENDS: Mapping[str, BackendSpec] = MappingProxyType({
    "git-large": BackendSpec(GIT, "microsoft/git-large-vqav2"),
    "git-base": BackendSpec(GIT, "microsoft/git-base-vqav2"),
    "blip2-flant5xl": BackendSpec(BLIP2, "Salesforce/blip2-flan-t5-xl"),
    # the reference's default: modelscope's damo/mplug_visual-question-answering_coco_large_en, converted
    # once by evalkit.metrics.tifa.mplug_convert (no hub copy of it is loadable), so a source is required
    "mplug-large": BackendSpec(MPLUG, None),
    "git": BackendSpec(GIT, None),
    "mplug": BackendSpec(MPLUG, None),
    "blip2": BackendSpec(BLIP2, None),
    # not a reference model (issue 3): a modern open VLM; Qwen2-VL checkpoints load through it too
    "qwen2.5-vl": BackendSpec(QWEN_VL, "Qwen/Qwen2.5-VL-7B-Instruct"),
})


def load_vqa_backend(
    name: str,
    source: str | Path | None = None,
    revision: str = DEFAULT_REVISION,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> BatchedVQA:
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
    family = spec.family
    hint = f"pass the folder of a {family.label} checkpoint ({family.holds})"
    checkpoint = CheckpointFolder(model_folder(name, source, revision, hint), name, family.label, hint)
    backend: BatchedVQA = import_object(family.loader)(checkpoint, dtype=dtype, max_rows=max_rows)
    backend.model.to(device).eval()
    return backend


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


def model_folder(name: str, source: str | Path, revision: str, local_hint: str) -> Path:
    """The local folder that holds the checkpoint, with safetensors weights checked present.

    A local folder wins over a hub id of the same spelling. Errors name the backend, because
    the user asked for a metric, not for a repository.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        folder = path
        fetch_hint = local_hint
    else:
        try:
            folder = resolve_hub_snapshot(str(source), revision, allow_patterns=HUB_PATTERNS)
        except EvalkitError as e:
            raise EvalkitError(f"VQA model {name}: {e.problem}", e.hint) from e
        fetch_hint = f"run `hf download {source} --revision {revision}` where there is network (and copy HF_HOME here)"
    if not any(folder.glob("*.safetensors")):
        raise EvalkitError(f"VQA model {name}: {folder} holds no safetensors weights", fetch_hint)
    return folder


@dataclass(frozen=True)
class CheckpointFolder:
    """A family loader's view of its local checkpoint folder: transformers parts from local files
    only (safetensors weights, PIL preprocessing as in the reference), and one error line, naming the
    backend and the family, for a folder that is not a checkpoint of that family."""

    folder: Path
    name: str  # the backend
    family: str  # "GIT", "BLIP-2", ...
    hint: str  # what a loadable folder of this family holds

    @contextmanager
    def loading(self) -> Iterator[None]:
        try:
            yield
        except (OSError, ValueError) as e:
            problem = f"VQA model {self.name}: {self.folder} is not a loadable {self.family} checkpoint ({e})"
            raise EvalkitError(problem.splitlines()[0], self.hint) from e

    def refuse(self, problem: str, hint: str) -> EvalkitError:
        return EvalkitError(f"VQA model {self.name}: {self.folder} {problem}", hint)

    def pretrained(self, cls: Any, **kwargs: Any) -> Any:
        """`cls.from_pretrained` on the folder, never the network."""
        return cls.from_pretrained(str(self.folder), local_files_only=True, **kwargs)

    def image_processor(self, backend: str = "pil") -> Any:
        from transformers import AutoImageProcessor

        return self.pretrained(AutoImageProcessor, backend=backend)

    def model(self, cls: Any, dtype: torch.dtype) -> Any:
        return self.pretrained(cls, use_safetensors=True, dtype=dtype)


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


def packs(question_counts: Sequence[int], max_rows: int) -> list[list[int]]:
    """Consecutive images (by index) per call: whole images, at most `max_rows` rows unless one
    image alone has more; images without questions are left out."""
    calls: list[list[int]] = []
    rows = 0
    for index, count in enumerate(question_counts):
        if count == 0:
            continue
        if not calls or rows + count > max_rows:
            calls.append([])
            rows = 0
        calls[-1].append(index)
        rows += count
    return calls


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
