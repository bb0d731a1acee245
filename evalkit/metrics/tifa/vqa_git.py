"""GIT as TIFA's "git-large" / "git-base" VQA backend, batched.

What the reference does (tifascore/vqa_models.py, class `GIT`, checkpoints
`microsoft/git-large-vqav2` and `microsoft/git-base-vqav2`), reproduced here:

* image: `Image.open(path).convert('RGB')`, then the checkpoint's processor (a PIL-based
  `CLIPImageProcessor` in the transformers of the time; here `backend="pil"` pins the same
  arithmetic, because transformers 5's torchvision processor resizes differently);
* prompt: the bare question, no template: `[CLS]` followed by the question's tokens without
  special tokens (the BERT-uncased tokenizer lower-cases it);
* `generate(pixel_values, input_ids, max_length=50)` with the checkpoint's generation config
  (greedy: no beams, no sampling), so question tokens + `[CLS]` + answer tokens <= 50;
* answer: the generated tokens after the prompt, `batch_decode(..., skip_special_tokens=True)`
  with the tokenizer's space clean-up on (the default of the transformers it ran on), no other
  post-processing (no lower-casing or stripping beyond what decoding does).

How the image is shared: `GitModel.forward` encodes `pixel_values` and tiles the projected image
tokens over the text batch (`repeat(text_batch // image_batch)`, so text row r gets image
r % n_images). One `generate` call therefore takes the pixel values of n images that have the
same number k of questions and n*k text rows ordered question-major (row j*n + i is question j
of image i): the vision tower runs once on the n images at prefill, and `generate` drops
`pixel_values` after prefill (the image tokens live in the KV cache), so it never runs again.
Rows of different lengths are left-padded with an attention mask; `generate` derives the text
position ids from that mask, so a padded row sees the positions of the unpadded reference.
Each row's answer is cut at its own reference budget (50 - prompt length); greedy decoding is
row-wise, so this equals the reference's per-question `max_length=50`.

Image tokens through the decoder once per image (`cache_image_tokens`, on by default): in GIT the
image tokens attend only to each other (bidirectionally), never to the text, so their keys and
values in every decoder layer are the same for all of an image's questions; tiling them over k
rows runs the decoder over GIT-large's 577 image tokens k times (~6 questions per TIFA image).
Instead the image tokens alone go through the decoder once per image (`prefix_cache`), the cache
is copied to each of the image's rows, and the text is prefilled and decoded greedily against it
(`_generate_cached`, the loop `generate` runs for a checkpoint whose generation config is plain
greedy: `_plain_greedy`; any other config keeps `generate`). Positions, masks and stopping are
generate's own: text positions from the padding mask, rows finished at EOS padded with the pad
token. Answers equal the uncached path's (tests/test_vqa.py, on a tiny random GIT); the logits
differ only by the float rounding of a smaller batch. Rows need no longer share a question count,
so calls pack whole images (`packs`) instead of grouping equal counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from evalkit.metrics.tifa.vqa import (
    DEFAULT_MAX_ROWS,
    BatchedVQA,
    CheckpointFolder,
    image_groups,
    model_device,
    packs,
    padded,
)

# The reference's `max_length=50`: counts the prompt ([CLS] + question tokens) and the answer.
REFERENCE_MAX_LENGTH = 50
# Generation-config fields that change greedy decoding, with the value that leaves it alone: the
# cached loop reproduces `generate` only when every one has it (module doc).
GREEDY_NEUTRAL: dict[str, Any] = {
    "do_sample": False, "num_beams": 1, "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "min_length": 0, "min_new_tokens": None,
    "bad_words_ids": None, "forced_bos_token_id": None, "forced_eos_token_id": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "sequence_bias": None, "exponential_decay_length_penalty": None,
    "force_words_ids": None, "constraints": None, "penalty_alpha": None, "dola_layers": None,
}


@dataclass
class GitVQA(BatchedVQA):
    """A loaded GIT VQA checkpoint: the model-specific parts of `vqa.BatchedVQA`'s answer loop.

    `choices` never reach the prompt (the reference does not show them to GIT).
    """

    model: Any  # GitForCausalLM
    tokenizer: Any
    image_processor: Any
    name: str = "git"
    max_length: int = REFERENCE_MAX_LENGTH
    max_rows: int = DEFAULT_MAX_ROWS
    shows_choices: bool = False
    cache_image_tokens: bool = True  # image tokens through the decoder once per image (module doc)

    @property
    def caches(self) -> bool:
        return self.cache_image_tokens and _plain_greedy(self.model.generation_config)

    def plan(self, question_counts: Sequence[int]) -> list[list[int]]:
        """Whole images packed per call when cached; else equal question counts, which GIT's tiling needs."""
        return packs(question_counts, self.max_rows) if self.caches else image_groups(question_counts, self.max_rows)

    def encode(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The call's pixel values on the model's device and dtype; `generate` runs the vision tower
        on them once, at prefill (module doc)."""
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        return pixels.to(model_device(self.model), self.model.dtype)

    def prompt_ids(self, question: str) -> list[int]:
        """The reference's prompt: [CLS] + the question's tokens, no template, no [SEP]."""
        return [self.tokenizer.cls_token_id, *self.tokenizer(question, add_special_tokens=False)["input_ids"]]

    def prompt(self, encoded: torch.Tensor, image: int, question: str, choices: Sequence[str]) -> list[int]:
        return self.prompt_ids(question)

    def generate(self, encoded: torch.Tensor, images: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """One `generate` call for n images with k questions each: rows reordered question-major for
        GIT's tiling (module doc), and the output put back in the loop's image-major order."""
        if self.caches:
            return self._generate_cached(encoded, images, prompts)
        n_images = encoded.shape[0]
        k = len(prompts) // n_images
        if list(images) != [i for i in range(n_images) for _ in range(k)]:
            raise ValueError("GIT needs the same number of questions for every image of a call")
        order = [i * k + j for j in range(k) for i in range(n_images)]  # question-major row -> image-major row
        input_ids, attention_mask = padded([prompts[r] for r in order], self.tokenizer.pad_token_id, "left",
                                           encoded.device)
        generated = self.model.generate(
            pixel_values=encoded,
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max(self._budgets(prompts)),
            do_sample=False,
            num_beams=1,
        )
        back = torch.empty(len(order), dtype=torch.long)
        back[order] = torch.arange(len(order))
        return generated[back.to(generated.device)]

    def prefix_cache(self, encoded: torch.Tensor) -> Any:
        """The decoder's keys and values of each image's tokens alone (no text), one cache row per image."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        no_text = torch.zeros((encoded.shape[0], 0), dtype=torch.long, device=encoded.device)
        self.model.git(input_ids=no_text, pixel_values=encoded, past_key_values=cache, use_cache=True)
        return cache

    def _generate_cached(self, encoded: torch.Tensor, images: Sequence[int],
                         prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Greedy decoding of every row against its image's cached tokens, as `generate` decodes:
        prompt tokens + up to the longest budget of new ones, finished rows padded (module doc)."""
        device = encoded.device
        cache = self.prefix_cache(encoded)
        cache.batch_select_indices(torch.tensor(list(images), dtype=torch.long, device=device))
        input_ids, mask = padded(prompts, self.tokenizer.pad_token_id, "left", device)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # generate's, from the padding mask
        config = self.model.generation_config
        eos = torch.tensor(_ids(config.eos_token_id), dtype=torch.long, device=device)
        pad = config.pad_token_id if config.pad_token_id is not None else self.tokenizer.pad_token_id
        finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        step_ids, step_positions, new = input_ids, positions, []
        for _ in range(max(self._budgets(prompts))):
            logits = self.model(input_ids=step_ids, attention_mask=mask, position_ids=step_positions,
                                past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            token = torch.where(finished, torch.full_like(finished, pad, dtype=torch.long), logits.argmax(-1))
            new.append(token)
            finished |= torch.isin(token, eos)
            if bool(finished.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            step_ids, step_positions = token[:, None], step_positions[:, -1:] + 1
        return torch.cat([input_ids, torch.stack(new, dim=1)], dim=1)

    def decode(self, generated: torch.Tensor, prompts: Sequence[Sequence[int]]) -> list[str]:
        """Each row's new tokens cut at its own reference budget (50 - prompt length)."""
        new_tokens = generated[:, max(len(p) for p in prompts):]
        return self.tokenizer.batch_decode(
            [new_tokens[row, :budget] for row, budget in enumerate(self._budgets(prompts))],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=True,
        )

    def _budgets(self, prompts: Sequence[Sequence[int]]) -> list[int]:
        return [max(1, self.max_length - len(p)) for p in prompts]


def _plain_greedy(config: Any) -> bool:
    """Whether `generate` with this config is the plain greedy loop `_generate_cached` runs."""
    unset_or_neutral = all(getattr(config, name, None) in (None, neutral) for name, neutral in GREEDY_NEUTRAL.items())
    return unset_or_neutral and config.eos_token_id is not None


def _ids(value: int | Sequence[int]) -> list[int]:
    return [value] if isinstance(value, int) else list(value)


def load_git(checkpoint: CheckpointFolder, *, dtype: torch.dtype, max_rows: int = DEFAULT_MAX_ROWS) -> GitVQA:
    """GitForCausalLM + tokenizer + PIL image processor from a local folder (no network)."""
    from transformers import AutoTokenizer, GitForCausalLM

    with checkpoint.loading():
        tokenizer = checkpoint.pretrained(AutoTokenizer)
        image_processor = checkpoint.image_processor()
        model = checkpoint.model(GitForCausalLM, dtype)
    if tokenizer.cls_token_id is None or tokenizer.pad_token_id is None:
        raise checkpoint.refuse("has a tokenizer without a [CLS] or [PAD] token",
                                "GIT's prompt starts with [CLS]; use the checkpoint's own BERT tokenizer")
    return GitVQA(model=model, tokenizer=tokenizer, image_processor=image_processor,
                  name=checkpoint.name, max_rows=max_rows)
