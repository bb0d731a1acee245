"""VQA backends on tiny random GIT and BLIP-2 checkpoints built in code.

The batching contract is checked against the reference's algorithm: one question per forward
pass, the image preprocessed and encoded again for every question (tifascore/vqa_models.py).
Batched answers must equal those of that loop, each image must go through the vision tower
once, and an answer must not depend on what else is in its batch. The random models are
initialised wide enough that their answers depend on the image and the question, so a wrong
image-to-row pairing would show up as a different answer.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics.tifa.questions import sample_questions
from evalkit.metrics.tifa.vqa import VQABackend, answer_tifa_questions, image_groups, load_vqa_backend, padded
from evalkit.metrics.tifa.vqa_blip2 import Blip2VQA, blip2_prompt
from evalkit.metrics.tifa.vqa_git import REFERENCE_MAX_LENGTH, GitVQA
from evalkit.tiny.tifa_models import write_tiny_git as tiny_git

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ["what", "is", "the", "color", "of", "dog", "cat", "how", "many", "are", "there", "a", "yes", "no", "red",
         "blue", "in", "image", "does", "have", "hat"]
QUESTIONS = [
    ["what is the color of the dog?", "how many cats are there?"],
    ["what is the color of the dog?", "is there a cat?", "what?"],
    ["what is the color of the dog?", "does the dog have a red hat?"],
]
CHOICES = [
    [["red", "blue"], ["1", "2", "3"]],
    [["red", "blue"], ["yes", "no"], ["a", "b"]],
    [["red", "blue"], ["yes", "no"]],
]
N_QUERY_TOKENS = 4
IMAGE_TOKEN = "<image>"


def images() -> list[Image.Image]:
    """Three very different images of different sizes; one greyscale, as generated PNGs never
    are but user images may be (the backend converts to RGB like the reference)."""
    noise = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    return [Image.new("RGB", (40, 40), (0, 0, 0)), Image.new("L", (36, 44), 255), Image.fromarray(noise)]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny matmuls are slower, and much noisier in time, across threads on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------
# Tiny checkpoints


def write_tiny_git(folder: Path) -> Path:
    return tiny_git(folder, WORDS)


def write_tiny_blip2(folder: Path) -> Path:
    from transformers import Blip2Config, Blip2ForConditionalGeneration, T5Tokenizer
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -5.0)]
    pieces += [(f"▁{w}", -float(i)) for i, w in enumerate([*WORDS, "answer", "question", "choices", "multiple-choice"])]
    pieces += [(c, -10.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789:.,?-"]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0, additional_special_tokens=[IMAGE_TOKEN])
    small = {"num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "initializer_range": 0.3}
    config = Blip2Config(
        vision_config={"hidden_size": 32, "image_size": 32, "patch_size": 8, **small},
        qformer_config={"hidden_size": 32, "encoder_hidden_size": 32, "vocab_size": 64, **small},
        text_config={"model_type": "t5", "vocab_size": len(tokenizer), "d_model": 32, "d_kv": 8, "d_ff": 64,
                     "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4, "initializer_factor": 3.0,
                     "decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0},
        num_query_tokens=N_QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        initializer_range=0.3,
    )
    torch.manual_seed(3)
    Blip2ForConditionalGeneration(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    BlipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def git_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_git(tmp_path_factory.mktemp("tiny-git"))


@pytest.fixture(scope="module")
def blip2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_blip2(tmp_path_factory.mktemp("tiny-blip2"))


@pytest.fixture(scope="module")
def git(git_dir: Path) -> GitVQA:
    backend = load_vqa_backend("git", git_dir)
    assert isinstance(backend, GitVQA)
    return backend


@pytest.fixture(scope="module")
def blip2(blip2_dir: Path) -> Blip2VQA:
    backend = load_vqa_backend("blip2", blip2_dir)
    assert isinstance(backend, Blip2VQA)
    return backend


# ---------------------------------------------------------------------------------------
# The reference's one-question-per-forward loops


def reference_git(backend: GitVQA, image: Image.Image, question: str) -> str:
    """tifascore GIT.vqa: processor on the one image, [CLS] + question, generate(max_length=50)."""
    tokenizer = backend.tokenizer
    pixel_values = backend.image_processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
    input_ids = torch.tensor([[tokenizer.cls_token_id, *tokenizer(question, add_special_tokens=False).input_ids]])
    with torch.inference_mode():
        generated = backend.model.generate(pixel_values=pixel_values, input_ids=input_ids, max_length=50)
    return tokenizer.batch_decode(generated[..., input_ids.shape[-1]:], skip_special_tokens=True)[0]


def reference_blip2(backend: Blip2VQA, image: Image.Image, question: str, choices: list[str]) -> str:
    """One question through transformers' own Blip2ForConditionalGeneration.generate (query
    outputs scattered into image-token slots before the prompt: LAVIS's layout), with LAVIS's
    beam-search settings: an implementation path independent of the backend's."""
    tokenizer = backend.tokenizer
    pixel_values = backend.image_processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
    image_ids = [tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)] * N_QUERY_TOKENS
    input_ids = torch.tensor([image_ids + tokenizer(blip2_prompt(question, choices)).input_ids])
    with torch.inference_mode():
        generated = backend.model.generate(pixel_values=pixel_values, input_ids=input_ids, num_beams=5,
                                           max_new_tokens=30, min_length=1, do_sample=False)
    return tokenizer.batch_decode(generated, skip_special_tokens=True)[0]


@pytest.fixture(scope="module")
def git_reference(git: GitVQA) -> list[list[str]]:
    return [[reference_git(git, im, q) for q in qs] for im, qs in zip(images(), QUESTIONS, strict=True)]


@pytest.fixture(scope="module")
def blip2_reference(blip2: Blip2VQA) -> list[list[str]]:
    return [[reference_blip2(blip2, im, q, c) for q, c in zip(qs, cs, strict=True)]
            for im, qs, cs in zip(images(), QUESTIONS, CHOICES, strict=True)]


def assert_informative(answers: list[list[str]]) -> None:
    """The same first question gets different answers on different images, so the images
    matter and a mix-up of image and row would change answers."""
    assert len({image_answers[0] for image_answers in answers}) > 1, answers


def vision_calls(module: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    """Batch sizes of every forward of `module`, recorded by a hook."""
    sizes: list[int] = []

    def record(_module: torch.nn.Module, args: tuple, kwargs: dict, _output: object) -> None:
        pixel_values = args[0] if args else kwargs["pixel_values"]
        sizes.append(int(pixel_values.shape[0]))

    return sizes, module.register_forward_hook(record, with_kwargs=True)


# ---------------------------------------------------------------------------------------
# GIT


def test_git_loads_offline_with_the_pil_image_processor(git: GitVQA) -> None:
    assert isinstance(git, VQABackend)
    assert type(git.image_processor).__name__ == "CLIPImageProcessorPil"
    assert git.max_length == REFERENCE_MAX_LENGTH == 50
    assert not git.shows_choices


def test_git_batched_answers_equal_the_reference_loop(git: GitVQA, git_reference: list[list[str]]) -> None:
    assert_informative(git_reference)
    assert git.answer(images(), QUESTIONS) == git_reference
    # choices are not shown to GIT (the reference does not), so they change nothing
    assert git.answer(images(), QUESTIONS, CHOICES) == git_reference


def test_git_encodes_each_image_once(git: GitVQA) -> None:
    uncached = GitVQA(git.model, git.tokenizer, git.image_processor, cache_image_tokens=False)
    sizes, handle = vision_calls(git.model.git.image_encoder)
    try:
        git.answer(images(), QUESTIONS)
        cached_sizes = list(sizes)
        sizes.clear()
        uncached.answer(images(), QUESTIONS)
    finally:
        handle.remove()
    assert cached_sizes == [3]  # cached image tokens: whole images packed in one call
    # tiled: images 0 and 2 (two questions each) share one call, image 1 (three) has its own;
    # nothing re-encodes during decoding
    assert sorted(sizes) == [1, 2]
    assert sum(sizes) == len(QUESTIONS)


def test_git_answers_do_not_depend_on_batch_composition(git: GitVQA, git_reference: list[list[str]]) -> None:
    ims = images()
    alone = [git.answer([im], [qs])[0] for im, qs in zip(ims, QUESTIONS, strict=True)]
    assert alone == git_reference
    assert git.answer(ims[::-1], QUESTIONS[::-1]) == git_reference[::-1]
    for max_rows in (1, 3, 100):
        small = GitVQA(git.model, git.tokenizer, git.image_processor, max_rows=max_rows)
        assert small.answer(ims, QUESTIONS) == git_reference
    # an image without questions, in the middle, changes nobody's answers
    assert git.answer([ims[0], ims[1], ims[2]], [QUESTIONS[0], [], QUESTIONS[2]]) == [
        git_reference[0], [], git_reference[2]]


def test_git_caps_each_answer_at_the_reference_length(git: GitVQA) -> None:
    """A long and a short question share a call: each answer stops at its own 50-token budget."""
    long_question = " ".join(["what is the color of the dog"] * 5) + "?"
    pair = [[long_question, "what?"]]
    batched = git.answer(images()[:1], pair)[0]
    assert batched == [reference_git(git, images()[0], q) for q in pair[0]]
    budget = REFERENCE_MAX_LENGTH - len(git.prompt_ids(long_question))
    assert len(git.tokenizer(batched[0], add_special_tokens=False).input_ids) <= budget


# ---------------------------------------------------------------------------------------
# BLIP-2


def test_blip2_prompt_is_the_reference_prompt() -> None:
    assert blip2_prompt("is there a dog?", ["yes", "no"]) == (
        "Answer the multiple-choice question. Question: is there a dog? Choices: yes, no Answer:")
    assert blip2_prompt("is there a dog?") == "Answer the question. Question: is there a dog? Answer:"


def test_blip2_batched_answers_equal_the_reference_loop(blip2: Blip2VQA, blip2_reference: list[list[str]]) -> None:
    assert isinstance(blip2, VQABackend) and blip2.shows_choices
    assert type(blip2.image_processor).__name__ == "BlipImageProcessorPil"
    assert_informative(blip2_reference)
    assert blip2.answer(images(), QUESTIONS, CHOICES) == blip2_reference


def test_blip2_encodes_each_image_once(blip2: Blip2VQA) -> None:
    sizes, handle = vision_calls(blip2.model.vision_model)
    try:
        blip2.answer(images(), QUESTIONS, CHOICES)
    finally:
        handle.remove()
    assert sizes == [len(QUESTIONS)]


def test_blip2_answers_do_not_depend_on_batch_composition(blip2: Blip2VQA,
                                                          blip2_reference: list[list[str]]) -> None:
    ims = images()
    alone = [blip2.answer([im], [qs], [cs])[0] for im, qs, cs in zip(ims, QUESTIONS, CHOICES, strict=True)]
    assert alone == blip2_reference
    assert blip2.answer(ims[::-1], QUESTIONS[::-1], CHOICES[::-1]) == blip2_reference[::-1]
    small = Blip2VQA(blip2.model, blip2.tokenizer, blip2.image_processor, max_rows=2)
    assert small.answer(ims, QUESTIONS, CHOICES) == blip2_reference


# ---------------------------------------------------------------------------------------
# Loading and input checks


def test_missing_hub_weights_offline_is_one_line_naming_the_model(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    for name, repo in [("git-large", "microsoft/git-large-vqav2"), ("blip2-flant5xl", "Salesforce/blip2-flan-t5-xl")]:
        with pytest.raises(EvalkitError) as excinfo:
            load_vqa_backend(name)
        line = excinfo.value.one_line()
        assert "\n" not in line
        assert f"VQA model {name}" in line and repo in line and "not in the local Hugging Face cache" in line
        assert f"hf download {repo} --revision main" in line


def test_folder_without_weights_is_refused(git_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no-weights"
    shutil.copytree(git_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(EvalkitError, match="holds no safetensors weights"):
        load_vqa_backend("git", folder)


def test_unknown_backend_and_missing_source_are_refused() -> None:
    with pytest.raises(EvalkitError, match="unknown VQA backend"):
        load_vqa_backend("ofa-large")  # the reference has it; evalkit does not
    with pytest.raises(EvalkitError, match="needs a checkpoint"):
        load_vqa_backend("git")


def test_mismatched_inputs_are_refused(git: GitVQA) -> None:
    with pytest.raises(ValueError, match="one list per image"):
        git.answer(images(), QUESTIONS[:2])
    with pytest.raises(TypeError, match="is a string"):
        git.answer(images()[:1], ["what?"])
    with pytest.raises(ValueError, match="same nesting"):
        git.answer(images(), QUESTIONS, CHOICES[:2])
    assert git.answer([], []) == []


def test_image_groups_share_calls_by_question_count() -> None:
    assert image_groups([2, 3, 2, 0, 2], max_rows=4) == [[0, 2], [4], [1]]
    assert image_groups([2, 3, 2, 0, 2], max_rows=100) == [[0, 2, 4], [1]]
    # an image with more questions than max_rows still gets one call (encoded once)
    assert image_groups([7, 7], max_rows=4) == [[0], [1]]


def test_padding_sides() -> None:
    ids, mask = padded([[5, 6], [7]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6], [0, 7]] and mask.tolist() == [[1, 1], [0, 1]]
    ids, mask = padded([[5, 6], [7]], pad_id=0, side="right")
    assert ids.tolist() == [[5, 6], [7, 0]] and mask.tolist() == [[1, 1], [1, 0]]


class EchoBackend:
    """Answers with the question and its choices, to show what reached the backend."""

    name = "echo"
    shows_choices = True

    def answer(self, images, questions, choices=None):  # type: ignore[no-untyped-def]
        assert len(images) == len(questions)
        return [[f"{q}|{'/'.join(c)}" for q, c in zip(qs, cs, strict=True)]
                for qs, cs in zip(questions, choices, strict=True)]


def test_tifa_questions_are_answered_flat_in_question_order() -> None:
    questions = sample_questions()
    per_image = list(questions.values())
    answers = answer_tifa_questions(EchoBackend(), images()[: len(per_image)], per_image)
    flat = [q for qs in per_image for q in qs]
    assert isinstance(EchoBackend(), VQABackend)
    assert answers == [f"{q.question}|{'/'.join(q.choices)}" for q in flat]


def _decoder_rows(git: GitVQA) -> tuple[list[tuple[int, int]], torch.utils.hooks.RemovableHandle]:
    """(rows, tokens) of every forward of GIT's first decoder layer."""
    seen: list[tuple[int, int]] = []

    def record(_module: torch.nn.Module, args: tuple, _output: object) -> None:
        seen.append((int(args[0].shape[0]), int(args[0].shape[1])))

    return seen, git.model.git.encoder.layer[0].register_forward_hook(record)


def test_git_image_tokens_cached_once_per_image_give_the_uncached_answers(git: GitVQA,
                                                                          git_reference: list[list[str]]) -> None:
    """The image tokens go through the decoder once per image and are shared by its questions
    (vqa_git's module doc); the answers are those of tiling them over every question row."""
    uncached = GitVQA(git.model, git.tokenizer, git.image_processor, cache_image_tokens=False)
    assert git.caches and not uncached.caches
    noise = np.random.default_rng(5).integers(0, 256, (8, 30, 34, 3), dtype=np.uint8)
    many = [*images(), *(Image.fromarray(a) for a in noise)]
    questions = [QUESTIONS[i % 3][: 1 + i % 3] for i in range(len(many))]  # 1-3 questions, counts mixed
    image_tokens = git.model.git.encoder.layer[0].attention.self.image_patch_tokens
    seen, handle = _decoder_rows(git)
    try:
        cached_answers = git.answer(many, questions)
        cached_rows = sum(rows for rows, tokens in seen if tokens >= image_tokens)
        seen.clear()
        uncached_answers = uncached.answer(many, questions)
        uncached_rows = sum(rows for rows, tokens in seen if tokens >= image_tokens)
    finally:
        handle.remove()
    assert_informative(cached_answers)
    assert cached_answers == uncached_answers
    assert cached_answers[:3] == [git_reference[i][: len(questions[i])] for i in range(3)]
    assert cached_rows == len(many)  # once per image ...
    assert uncached_rows == sum(len(qs) for qs in questions) > cached_rows  # ... where tiling ran it per question


def test_git_keeps_generate_for_a_checkpoint_that_is_not_plain_greedy(git: GitVQA) -> None:
    """A generation config the cached greedy loop does not reproduce (here a repetition penalty) is
    decoded by transformers' generate, as the reference decodes it."""
    import copy

    model = copy.deepcopy(git.model)
    model.generation_config.repetition_penalty = 1.3
    penalised = GitVQA(model, git.tokenizer, git.image_processor)
    assert not penalised.caches
    expected = []
    for image, qs in zip(images(), QUESTIONS, strict=True):
        pixel_values = git.image_processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
        answers = []
        for q in qs:
            ids = torch.tensor([git.prompt_ids(q)])
            with torch.inference_mode():
                out = model.generate(pixel_values=pixel_values, input_ids=ids, max_length=REFERENCE_MAX_LENGTH)
            answers.append(git.tokenizer.batch_decode(out[..., ids.shape[-1]:], skip_special_tokens=True)[0])
        expected.append(answers)
    assert penalised.answer(images(), QUESTIONS) == expected
