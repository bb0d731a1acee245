"""BLIP-2 FlanT5 as TIFA's "blip2-flant5xl" VQA backend, batched.

What the reference does (tifascore/vqa_models.py, class `BLIP2`: LAVIS
`load_model_and_preprocess("blip2_t5", "pretrain_flant5xl")`, whose weights are the hub's
`Salesforce/blip2-flan-t5-xl`), reproduced here:

* BLIP-2 is the one backend that is shown the choices: TIFA always passes them, so the prompt is
  `Answer the multiple-choice question. Question: {question} Choices: {', '.join(choices)} Answer:`
  (without choices: `Answer the question. Question: {question} Answer:`);
* image: `.convert('RGB')`, LAVIS `blip_image_eval` at 224 (bicubic resize to 224x224, CLIP
  mean/std) — the checkpoint's `BlipImageProcessor` with the PIL backend does the same;
* LAVIS `Blip2T5.generate` defaults: the 32 Q-Former query outputs, projected, are prepended to
  the embedded prompt (T5 tokenizer, with its `</s>`), and
  `t5_model.generate(inputs_embeds, attention_mask, num_beams=5, max_new_tokens=30,
  min_length=1, length_penalty=1.0, repetition_penalty=1.0, do_sample=False)`;
* answer: `batch_decode(skip_special_tokens=True)`, nothing else.

Not reproduced: LAVIS runs the ViT under fp16 autocast and keeps FlanT5 in bfloat16 on GPU; here
the whole model runs in the dtype asked for (the Q-Former stays float32, as transformers keeps
it), so answers can differ from the reference's in near ties.

How the image is shared: `get_image_features` (ViT + Q-Former + projection) runs once for the
images of a call (whole images, packed up to `max_rows` question rows by the shared loop); each
question row then gets its image's 32 projected query vectors by index (no copy of the vision
work), concatenated with its prompt embeddings, right-padded with a mask (T5's encoder is
bidirectional with relative positions, so right padding changes nothing but float noise), and all
rows of the call go through one beam-search `generate` of the language model. Beam search runs
per row, so an answer does not depend on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from evalkit.metrics.tifa.vqa import DEFAULT_MAX_ROWS, BatchedVQA, CheckpointFolder, model_device, padded

PROMPT = "Answer the question. Question: {question} Answer:"
CHOICES_PROMPT = "Answer the multiple-choice question. Question: {question} Choices: {choices} Answer:"
# LAVIS Blip2T5.generate defaults, which the reference leaves untouched.
REFERENCE_NUM_BEAMS = 5
REFERENCE_MAX_NEW_TOKENS = 30
REFERENCE_MIN_LENGTH = 1


def blip2_prompt(question: str, choices: Sequence[str] = ()) -> str:
    """The reference's prompt; the choices are shown whenever there are any."""
    if choices:
        return CHOICES_PROMPT.format(question=question, choices=", ".join(choices))
    return PROMPT.format(question=question)


@dataclass
class Blip2VQA(BatchedVQA):
    """A loaded BLIP-2 encoder-decoder (FlanT5) checkpoint: the model-specific parts of
    `vqa.BatchedVQA`'s answer loop. The choices (when given) are shown in the prompt."""

    model: Any  # Blip2ForConditionalGeneration
    tokenizer: Any
    image_processor: Any
    name: str = "blip2"
    num_beams: int = REFERENCE_NUM_BEAMS
    max_new_tokens: int = REFERENCE_MAX_NEW_TOKENS
    max_rows: int = DEFAULT_MAX_ROWS
    shows_choices: bool = True

    def encode(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(n_images, n_queries, lm_hidden): ViT + Q-Former + projection, once per image."""
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        batch = pixels.to(model_device(self.model), self.model.dtype)
        return self.model.get_image_features(pixel_values=batch).pooler_output

    def prompt(self, encoded: torch.Tensor, image: int, question: str, choices: Sequence[str]) -> list[int]:
        return self.tokenizer(blip2_prompt(question, choices))["input_ids"]  # with T5's </s>, as LAVIS

    def generate(self, encoded: torch.Tensor, images: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """One beam-search call over rows = (image features, prompt), as LAVIS builds them."""
        language_model = self.model.language_model
        device = encoded.device
        input_ids, prompt_mask = padded(prompts, self.tokenizer.pad_token_id, "right", device)
        prompt_embeds = language_model.get_input_embeddings()(input_ids)
        queries = encoded[torch.tensor(list(images), device=device)].to(prompt_embeds.dtype)
        inputs_embeds = torch.cat([queries, prompt_embeds], dim=1)
        query_mask = torch.ones(queries.shape[:2], dtype=torch.long, device=device)
        attention_mask = torch.cat([query_mask, prompt_mask], dim=1)
        return language_model.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            do_sample=False,
            num_beams=self.num_beams,
            max_new_tokens=self.max_new_tokens,
            min_length=REFERENCE_MIN_LENGTH,
            length_penalty=1.0,
            repetition_penalty=1.0,
            num_return_sequences=1,
        )

    def decode(self, generated: torch.Tensor, prompts: Sequence[Sequence[int]]) -> list[str]:
        return self.tokenizer.batch_decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=True)


def load_blip2(checkpoint: CheckpointFolder, *, dtype: torch.dtype, max_rows: int = DEFAULT_MAX_ROWS) -> Blip2VQA:
    """Blip2ForConditionalGeneration + T5 tokenizer + PIL image processor from a local folder."""
    from transformers import AutoTokenizer, Blip2ForConditionalGeneration

    with checkpoint.loading():
        tokenizer = checkpoint.pretrained(AutoTokenizer)
        image_processor = checkpoint.image_processor()
        model = checkpoint.model(Blip2ForConditionalGeneration, dtype)
    if model.config.use_decoder_only_language_model:
        raise checkpoint.refuse(
            "is a BLIP-2 with a decoder-only language model",
            "only FlanT5 (encoder-decoder) BLIP-2 checkpoints, as in the TIFA reference, are supported")
    return Blip2VQA(model=model, tokenizer=tokenizer, image_processor=image_processor,
                    name=checkpoint.name, max_rows=max_rows)
