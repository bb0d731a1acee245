"""Qwen2.5-VL (and Qwen2-VL) as a TIFA VQA backend, batched, each image encoded once.

Not a reference model: the TIFA reference (tifascore/vqa_models.py) has no Qwen. Issue 3 asks
for one strong modern open VLM besides the reference's own, so this backend follows TIFA's
free-form protocol as the reference runs it for GIT, and Qwen's own VQA evaluation prompt:

* prompt: the checkpoint's chat template (its default system turn included) with one user turn,
  the image and then `{question}\\nAnswer the question using a single word or phrase.` — the
  short-answer instruction Qwen-VL (and LLaVA) use for VQAv2-style evaluation. The choices are
  not shown (`shows_choices` False), as the reference does not show them to GIT: the free-form
  answer is mapped onto the choices by `tifa_scoring` (exact match, then MPNet similarity).
  Showing them as a multiple-choice prompt would change what is measured (recognition among
  given options instead of open answering) and make scores incomparable with the GIT cards.
* decoding: greedy (`do_sample=False`, one beam), `repetition_penalty=1.0`, at most
  `MAX_NEW_TOKENS` = 16 new tokens, stopping at the checkpoint's end tokens. The sampling
  settings and the 1.05 repetition penalty of the Instruct checkpoints' `generation_config.json`
  are overridden: TIFA needs one deterministic answer per question.
* answer: the new tokens decoded without special tokens, then `normalize_answer`: surrounding
  whitespace and trailing periods dropped, lower-cased. Why: TIFA keeps an answer only on an
  exact, case-sensitive match with a choice (choices are lower case: "yes", "red", "2"), and
  this model answers "Yes." where GIT's uncased tokenizer gives "yes". Lower-casing does not
  change the MPNet fallback (all-mpnet-base-v2 lower-cases its input), so it only turns answers
  that differ from a choice by case into exact matches; the period would change the embedding
  for no reason. Nothing else (articles, number words) is normalised, as in the reference.
* image: `.convert('RGB')`, then the checkpoint's Qwen2-VL image processor (PIL backend, as the
  other backends, so the arithmetic does not depend on torchvision): resized to multiples of
  28 px between its `min_pixels` and `max_pixels` (a 512x512 image: 18x18 patches of 28 px,
  324 image tokens in the 7B checkpoints).

How the image is shared: Qwen-VL's `forward` runs the vision tower on the `pixel_values` of every
row it is given, so the usual batching (each row carries its image) would encode an image once
per question. Instead `get_image_features` runs once per `generate` call on the call's images,
and each row gets its image's embeddings through `generate(mm_encoder_outputs=...)`, the
precomputed-encoder input transformers 5 provides (the same tensor objects per row; only the
final scatter into the rows copies them). Rows carry their own `image_grid_thw` and
`mm_token_type_ids`, so the M-RoPE positions are those of a one-question run. The shared loop
(`vqa.BatchedVQA`) packs whole images into calls of at most `max_rows` rows (an image with more
questions than that gets a call of its own); rows are left-padded with a mask (decoder-only:
every answer continues its row's end; the M-RoPE index skips masked tokens). An answer therefore
does not depend on which questions share its call beyond float noise.

Qwen2-VL checkpoints go through the same code (same processor, same `generate` inputs; only the
model class differs, chosen from `config.json`), so `vqa_backend: qwen2.5-vl` with a Qwen2-VL
source works too.

Memory: float32 (what TIFA's loader asks for) puts the 7B model at ~33 GB; these models are
normally run in bfloat16 (~17 GB), which a TIFA card selects with `dtype: bfloat16` (a different
fingerprint), as `load_vqa_backend(..., dtype=torch.bfloat16)` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics.tifa.vqa import DEFAULT_MAX_ROWS, BatchedVQA, CheckpointFolder, model_device, padded

INSTRUCTION = "Answer the question using a single word or phrase."
MAX_NEW_TOKENS = 16
IMAGE_TOKEN = "<|image_pad|>"
# config.json model_type -> transformers class name; both take the same processor and inputs.
MODEL_CLASSES = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen2_vl": "Qwen2VLForConditionalGeneration"}


def normalize_answer(text: str) -> str:
    """Whitespace and trailing periods off, lower case (why: module docstring)."""
    return text.strip().rstrip(".").strip().lower()


def question_messages(question: str) -> list[dict[str, Any]]:
    """One user turn: the image, then the question and the short-answer instruction."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"{question}\n{INSTRUCTION}"}]}]


def chat_ids(processor: Any, messages: list[dict[str, Any]], n_image_tokens: int, name: str) -> list[int]:
    """The chat-templated prompt's tokens, the image placeholder expanded to the image's tokens
    (what the processor's `__call__` does, without preprocessing the image again)."""
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if text.count(IMAGE_TOKEN) != 1:
        raise EvalkitError(f"VQA model {name}: the chat template does not place exactly one {IMAGE_TOKEN}",
                           "use the checkpoint's own Qwen-VL chat template (chat_template.json)")
    return processor.tokenizer(text.replace(IMAGE_TOKEN, IMAGE_TOKEN * n_image_tokens),
                               add_special_tokens=False)["input_ids"]


@dataclass(frozen=True)
class EncodedImages:
    """A call's images through the vision tower, once."""

    features: tuple[torch.Tensor, ...]  # per image: (n_image_tokens, hidden)
    grid: torch.Tensor  # image_grid_thw, one row per image


@dataclass
class QwenVLVQA(BatchedVQA):
    """A loaded Qwen2.5-VL / Qwen2-VL checkpoint: the model-specific parts of `vqa.BatchedVQA`'s
    answer loop. `choices` are not shown (module doc)."""

    model: Any  # Qwen2_5_VLForConditionalGeneration or Qwen2VLForConditionalGeneration
    processor: Any  # for the chat template and the tokenizer
    image_processor: Any  # Qwen2VLImageProcessorPil
    name: str = "qwen2.5-vl"
    max_new_tokens: int = MAX_NEW_TOKENS
    max_rows: int = DEFAULT_MAX_ROWS
    shows_choices: bool = False

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    def prompt_ids(self, question: str, n_image_tokens: int) -> list[int]:
        return chat_ids(self.processor, question_messages(question), n_image_tokens, self.name)

    def encode(self, images: Sequence[Image.Image]) -> EncodedImages:
        device = model_device(self.model)
        pixels = self.image_processor(images=list(images), return_tensors="pt")
        grid = pixels["image_grid_thw"].to(device)
        features = self.model.get_image_features(pixel_values=pixels["pixel_values"].to(device, self.model.dtype),
                                                 image_grid_thw=grid).pooler_output  # one tensor per image
        return EncodedImages(tuple(features), grid)

    def prompt(self, encoded: EncodedImages, image: int, question: str, choices: Sequence[str]) -> list[int]:
        return self.prompt_ids(question, int(encoded.features[image].shape[0]))

    def generate(self, encoded: EncodedImages, images: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """One greedy `generate` over the rows, each given its image's embeddings (module doc)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        input_ids, attention_mask = padded(prompts, self.tokenizer.pad_token_id, "left", encoded.grid.device)
        image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        # a tuple, one tensor per image, as Qwen's own get_image_features returns; the field is typed Tensor
        rows = BaseModelOutputWithPooling(pooler_output=tuple(encoded.features[i] for i in images))  # type: ignore[arg-type]
        generated = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            mm_token_type_ids=(input_ids == image_token_id).long() * attention_mask,
            image_grid_thw=encoded.grid[list(images)],
            mm_encoder_outputs={"image": rows},
            do_sample=False,
            num_beams=1,
            repetition_penalty=1.0,
            max_new_tokens=self.max_new_tokens,
        )
        return generated[:, input_ids.shape[1]:]

    def decode(self, generated: torch.Tensor, prompts: Sequence[Sequence[int]]) -> list[str]:
        """`generated` holds only the new tokens (`generate` cuts the prompt off)."""
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return [normalize_answer(text) for text in texts]


def load_qwen_vl(checkpoint: CheckpointFolder, *, dtype: torch.dtype, max_rows: int = DEFAULT_MAX_ROWS,
                 image_backend: str = "pil") -> QwenVLVQA:
    """A Qwen2.5-VL or Qwen2-VL checkpoint (class from config.json) + processor from a local folder.
    `image_backend`: the image processor's, "pil" (TIFA's, as its other backends) or "torchvision"."""
    import transformers
    from transformers import AutoConfig, AutoProcessor

    with checkpoint.loading():
        config = checkpoint.pretrained(AutoConfig)
        if config.model_type not in MODEL_CLASSES:
            raise checkpoint.refuse(f"is a {config.model_type!r} checkpoint, not Qwen-VL", checkpoint.hint)
        processor = checkpoint.pretrained(AutoProcessor)
        image_processor = checkpoint.image_processor(image_backend)
        model = checkpoint.model(getattr(transformers, MODEL_CLASSES[config.model_type]), dtype)
    if getattr(processor, "chat_template", None) is None or processor.tokenizer.pad_token_id is None:
        raise checkpoint.refuse(
            "has no chat template or no padding token",
            "use an Instruct checkpoint with its own processor files (chat_template.json, tokenizer)")
    return QwenVLVQA(model=model, processor=processor, image_processor=image_processor,
                     name=checkpoint.name, max_rows=max_rows)
