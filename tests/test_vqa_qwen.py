"""The Qwen2.5-VL VQA backend on tiny random Qwen2.5-VL and Qwen2-VL checkpoints built in code.

The reference path here is transformers' own one-question route: the processor builds the
prompt and pixel values of one (image, question) and `generate` encodes the image inside the
forward pass. The backend encodes each image once and hands the embeddings to every row of a
batched `generate`; its answers must equal that route's, must not depend on what else shares
the call, and the vision tower must run once per image.
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
from evalkit.metrics.tifa.vqa import BACKENDS, VQABackend, load_vqa_backend
from evalkit.metrics.tifa.vqa_qwen import INSTRUCTION, MAX_NEW_TOKENS, QwenVLVQA, normalize_answer, question_messages
from evalkit.tiny.qwen_vl import write_tiny_qwen_vl

os.environ.setdefault("HF_HUB_OFFLINE", "1")

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


def images() -> list[Image.Image]:
    """Three different images of different sizes (so different numbers of image tokens, hence
    left padding), one greyscale (the backend converts to RGB)."""
    noise = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    return [Image.new("RGB", (40, 40), (0, 0, 0)), Image.new("L", (36, 44), 255), Image.fromarray(noise)]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_qwen_vl(tmp_path_factory.mktemp("tiny-qwen2.5-vl"))


@pytest.fixture(scope="module")
def qwen(qwen_dir: Path) -> QwenVLVQA:
    backend = load_vqa_backend("qwen2.5-vl", qwen_dir)
    assert isinstance(backend, QwenVLVQA)
    return backend


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory: pytest.TempPathFactory) -> QwenVLVQA:
    backend = load_vqa_backend("qwen2.5-vl", write_tiny_qwen_vl(tmp_path_factory.mktemp("tiny-qwen2-vl"),
                                                                 version="2"))
    assert isinstance(backend, QwenVLVQA)
    return backend


def reference_answer(backend: QwenVLVQA, image: Image.Image, question: str) -> str:
    """transformers' usual route for one question: processor(text, images) and generate, greedy."""
    processor = backend.processor
    text = processor.apply_chat_template(question_messages(question), add_generation_prompt=True, tokenize=False)
    # pixel values from the backend's PIL image processor: the processor's default (torchvision)
    # resizes with other arithmetic, which is a preprocessing choice, not what is tested here
    pixels = backend.image_processor(images=[image.convert("RGB")], return_tensors="pt")
    n_tokens = int(pixels["image_grid_thw"].prod()) // backend.image_processor.merge_size ** 2
    inputs = processor.tokenizer([text.replace("<|image_pad|>", "<|image_pad|>" * n_tokens)], return_tensors="pt")
    image_token_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    with torch.inference_mode():
        generated = backend.model.generate(**inputs, pixel_values=pixels["pixel_values"],
                                           image_grid_thw=pixels["image_grid_thw"],
                                           mm_token_type_ids=(inputs["input_ids"] == image_token_id).long(),
                                           do_sample=False, repetition_penalty=1.0, max_new_tokens=MAX_NEW_TOKENS)
    new = generated[:, inputs["input_ids"].shape[1]:]
    return normalize_answer(processor.tokenizer.batch_decode(new, skip_special_tokens=True)[0])


def reference(backend: QwenVLVQA) -> list[list[str]]:
    return [[reference_answer(backend, im, q) for q in qs] for im, qs in zip(images(), QUESTIONS, strict=True)]


@pytest.fixture(scope="module")
def qwen_reference(qwen: QwenVLVQA) -> list[list[str]]:
    return reference(qwen)


def vision_calls(module: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    """Images per forward of the vision tower (rows of its `grid_thw`), recorded by a hook."""
    sizes: list[int] = []

    def record(_module: torch.nn.Module, args: tuple, kwargs: dict, _output: object) -> None:
        sizes.append(int(kwargs["grid_thw"].shape[0]))

    return sizes, module.register_forward_hook(record, with_kwargs=True)


def test_loads_offline_as_a_free_form_backend(qwen: QwenVLVQA) -> None:
    assert isinstance(qwen, VQABackend) and not qwen.shows_choices
    assert qwen.name == "qwen2.5-vl" and BACKENDS["qwen2.5-vl"].default_source == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert type(qwen.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(qwen.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    # the tiny checkpoint carries the Instruct checkpoints' sampling defaults; the backend overrides them
    assert qwen.model.generation_config.do_sample and qwen.model.generation_config.repetition_penalty == 1.05


def test_prompt_is_the_chat_template_with_the_short_answer_instruction(qwen: QwenVLVQA) -> None:
    text = qwen.tokenizer.decode(qwen.prompt_ids("is there a cat?", n_image_tokens=2))
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|image_pad|><|vision_end|>is there a cat?\n"
                    f"{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n")
    assert INSTRUCTION == "Answer the question using a single word or phrase."


def test_answers_are_normalized_strings() -> None:
    assert normalize_answer(" Yes.\n") == "yes"
    assert normalize_answer("Red") == "red" and normalize_answer("2") == "2"
    assert normalize_answer("a red hat") == "a red hat"


def test_batched_answers_equal_the_one_question_route(qwen: QwenVLVQA, qwen_reference: list[list[str]]) -> None:
    answers = qwen.answer(images(), QUESTIONS)
    assert all(isinstance(a, str) for image_answers in answers for a in image_answers)
    assert len({image_answers[0] for image_answers in qwen_reference}) > 1  # the image matters
    assert answers == qwen_reference
    assert qwen.answer(images(), QUESTIONS, CHOICES) == qwen_reference  # choices are not shown


def test_answers_do_not_depend_on_batch_composition(qwen: QwenVLVQA, qwen_reference: list[list[str]]) -> None:
    ims = images()
    alone = [[qwen.answer([im], [[q]])[0][0] for q in qs] for im, qs in zip(ims, QUESTIONS, strict=True)]
    assert alone == qwen_reference
    assert qwen.answer(ims[::-1], QUESTIONS[::-1]) == qwen_reference[::-1]
    for max_rows in (1, 3):
        small = QwenVLVQA(qwen.model, qwen.processor, qwen.image_processor, max_rows=max_rows)
        assert small.answer(ims, QUESTIONS) == qwen_reference
    assert qwen.answer(ims, [QUESTIONS[0], [], QUESTIONS[2]]) == [qwen_reference[0], [], qwen_reference[2]]


def test_each_image_is_encoded_once(qwen: QwenVLVQA) -> None:
    sizes, handle = vision_calls(qwen.model.model.visual)
    try:
        qwen.answer(images(), QUESTIONS)
    finally:
        handle.remove()
    assert sizes == [len(QUESTIONS)]  # 7 questions: one call, one vision pass over the 3 images
    assert qwen.plan([2, 3, 0, 2]) == [[0, 1, 3]]
    assert QwenVLVQA(qwen.model, qwen.processor, qwen.image_processor, max_rows=4).plan([2, 3, 0, 2, 6]) == [
        [0], [1], [3], [4]]


def test_rows_are_left_padded(qwen: QwenVLVQA, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of different lengths (images of 16 and 12 tokens) end together: padding on the left."""
    seen: dict[str, torch.Tensor] = {}
    generate = qwen.model.generate

    def spy(**kwargs: object) -> torch.Tensor:
        seen.update({k: v for k, v in kwargs.items() if k in ("input_ids", "attention_mask")})
        return generate(**kwargs)

    monkeypatch.setattr(qwen.model, "generate", spy)
    qwen.answer(images()[:2], [["what?"], ["what?"]])
    mask = seen["attention_mask"]
    assert mask[:, -1].all() and not mask.all()
    short = int(mask.sum(dim=1).argmin())
    width = int(mask[short].sum())
    assert mask[short].tolist() == [0] * (mask.shape[1] - width) + [1] * width
    assert (seen["input_ids"][short, : mask.shape[1] - width] == qwen.tokenizer.pad_token_id).all()


def test_qwen2_vl_checkpoints_load_through_the_same_backend(qwen2: QwenVLVQA) -> None:
    assert type(qwen2.model).__name__ == "Qwen2VLForConditionalGeneration"
    expected = reference(qwen2)
    assert qwen2.answer(images(), QUESTIONS) == expected
    assert [qwen2.answer([im], [qs])[0] for im, qs in zip(images(), QUESTIONS, strict=True)] == expected


def test_folder_without_weights_is_one_line(qwen_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no-weights"
    shutil.copytree(qwen_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(EvalkitError, match="holds no safetensors weights") as excinfo:
        load_vqa_backend("qwen2.5-vl", folder)
    assert "\n" not in excinfo.value.one_line() and "VQA model qwen2.5-vl" in excinfo.value.one_line()


def test_other_architectures_are_refused(tmp_path: Path) -> None:
    from evalkit.tiny.tifa_models import write_tiny_git

    with pytest.raises(EvalkitError, match="'git' checkpoint, not Qwen-VL"):
        load_vqa_backend("qwen2.5-vl", write_tiny_git(tmp_path / "git"))


def test_missing_hub_weights_offline_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(EvalkitError) as excinfo:
        load_vqa_backend("qwen2.5-vl")
    line = excinfo.value.one_line()
    assert "\n" not in line and "Qwen/Qwen2.5-VL-7B-Instruct" in line
    assert "hf download Qwen/Qwen2.5-VL-7B-Instruct --revision main" in line


# ---------------------------------------------------------------------------------------
# The TIFA metric end to end, and the shipped card


def test_tifa_metric_scores_the_sample_set_with_qwen(generate, sd_dir, qwen_dir, tmp_path) -> None:
    from evalkit.metrics.registry import create
    from evalkit.metrics.tifa.answers import load_sentence_embedder
    from evalkit.metrics.tifa.questions import sample_questions
    from evalkit.metrics.tifa.scoring import aggregate, score_questions
    from evalkit.prompts.sets import load_prompt_set
    from evalkit.scoring.engine import score_step
    from evalkit.tiny.clip import write_card
    from evalkit.tiny.tifa_models import write_tiny_mpnet

    mpnet = write_tiny_mpnet(tmp_path / "mpnet")
    card = write_card(tmp_path / "tifa-qwen-tiny.yaml", "tifa-qwen-tiny", "tifa", "tifa-v1.0-sample",
                      {"vqa": qwen_dir, "sentence": mpnet}, params={"vqa_backend": "qwen2.5-vl", "questions": "sample"})
    step = generate(sd_dir, [load_prompt_set("tifa-v1.0-sample")], out=tmp_path / "run")[0].step_dir
    result = score_step(step, [create(str(card))], torch.device("cpu"), batch_size=2, quiet=True)[0]
    assert result.values["n"] == 2 and result.values["n_questions"] == 19
    assert 0.0 <= result.values["value"] <= 1.0

    backend = load_vqa_backend("qwen2.5-vl", qwen_dir)
    embed = load_sentence_embedder(mpnet)
    records = []
    for prompt_id, qs in sample_questions().items():
        image = Image.open(step / f"images/tifa-v1.0-sample/{prompt_id}_0.png").convert("RGB")
        records += score_questions(qs, [backend.answer([image], [[q.question]])[0][0] for q in qs], embed)
    assert result.values["value"] == pytest.approx(float(aggregate(records).tifa_average), abs=1e-12)


def test_shipped_card_names_the_backend_and_its_default_checkpoint() -> None:
    from evalkit.metrics.cards import read_card
    from evalkit.runtime.datafiles import shipped_dir

    card = read_card(shipped_dir("metrics") / "tifa-qwen2.5vl.yaml")
    assert card.implementation == "tifa" and card.prompt_set == "tifa-v1.0"
    assert card.params["vqa_backend"] == "qwen2.5-vl"
    assert card.model("vqa").source == BACKENDS["qwen2.5-vl"].default_source
