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

How the image is shared: `get_image_features` (ViT + Q-Former + projection) runs once for all
images of the call; each question row then gets its image's 32 projected query vectors by index
(no copy of the vision work), concatenated with its prompt embeddings, right-padded with a mask
(T5's encoder is bidirectional with relative positions, so right padding changes nothing but
float noise), and all rows go through one beam-search `generate` of the language model per
chunk of `max_rows` rows. Beam search runs per row, so an answer does not depend on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics.tifa.vqa import DEFAULT_MAX_ROWS, check_request, chunks, model_device, padded, rgb

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
class Blip2VQA:
    """A loaded BLIP-2 encoder-decoder (FlanT5) checkpoint; satisfies `vqa.VQABackend`."""

    model: Any  # Blip2ForConditionalGeneration
    tokenizer: Any
    image_processor: Any
    name: str = "blip2"
    num_beams: int = REFERENCE_NUM_BEAMS
    max_new_tokens: int = REFERENCE_MAX_NEW_TOKENS
    max_rows: int = DEFAULT_MAX_ROWS
    shows_choices: bool = True

    def answer(
        self,
        images: Sequence[Image.Image],
        questions: Sequence[Sequence[str]],
        choices: Sequence[Sequence[Sequence[str]]] | None = None,
    ) -> list[list[str]]:
        """Free-form answers per image, the choices (when given) shown in the prompt."""
        check_request(images, questions, choices)
        rows = [(i, blip2_prompt(q, choices[i][j] if choices is not None else ()))
                for i, qs in enumerate(questions) for j, q in enumerate(qs)]
        answers: list[list[str]] = [[] for _ in images]
        if not rows:
            return answers
        with torch.inference_mode():
            features = self.image_features(images)
            for chunk in chunks(len(rows), self.max_rows):
                part = [rows[r] for r in chunk]
                texts = self._generate(features, [i for i, _ in part], [p for _, p in part])
                for (index, _), text in zip(part, texts, strict=True):
                    answers[index].append(text)
        return answers

    def image_features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(n_images, n_queries, lm_hidden): ViT + Q-Former + projection, once per image."""
        device = model_device(self.model)
        pixels = self.image_processor(images=rgb(images), return_tensors="pt")["pixel_values"]
        parts = []
        for chunk in chunks(len(images), self.max_rows):
            batch = pixels[chunk.start:chunk.stop].to(device, self.model.dtype)
            parts.append(self.model.get_image_features(pixel_values=batch).pooler_output)
        return torch.cat(parts)

    def _generate(self, features: torch.Tensor, image_index: list[int], prompts: list[str]) -> list[str]:
        """One beam-search call over rows = (image features, prompt), as LAVIS builds them."""
        language_model = self.model.language_model
        device = features.device
        token_rows = [self.tokenizer(p)["input_ids"] for p in prompts]  # with T5's </s>, as LAVIS
        input_ids, prompt_mask = padded(token_rows, self.tokenizer.pad_token_id, "right", device)
        prompt_embeds = language_model.get_input_embeddings()(input_ids)
        queries = features[torch.tensor(image_index, device=device)].to(prompt_embeds.dtype)
        inputs_embeds = torch.cat([queries, prompt_embeds], dim=1)
        query_mask = torch.ones(queries.shape[:2], dtype=torch.long, device=device)
        attention_mask = torch.cat([query_mask, prompt_mask], dim=1)
        generated = language_model.generate(
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
        return self.tokenizer.batch_decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=True)


def load_blip2(
    folder: Path,
    *,
    name: str,
    device: str | torch.device,
    dtype: torch.dtype,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> Blip2VQA:
    """Blip2ForConditionalGeneration + T5 tokenizer + PIL image processor from a local folder."""
    from transformers import AutoImageProcessor, AutoTokenizer, Blip2ForConditionalGeneration

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        image_processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True, backend="pil")
        model = Blip2ForConditionalGeneration.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, dtype=dtype
        )
    except (OSError, ValueError) as e:
        raise EvalkitError(f"VQA model {name}: {folder} is not a loadable BLIP-2 checkpoint ({e})".splitlines()[0],
                           "pass the folder of a BLIP-2 checkpoint (config, tokenizer, preprocessor, weights)") from e
    if model.config.use_decoder_only_language_model:
        raise EvalkitError(f"VQA model {name}: {folder} is a BLIP-2 with a decoder-only language model",
                           "only FlanT5 (encoder-decoder) BLIP-2 checkpoints, as in the TIFA reference, are supported")
    model.to(device).eval()
    return Blip2VQA(model=model, tokenizer=tokenizer, image_processor=image_processor, name=name, max_rows=max_rows)
