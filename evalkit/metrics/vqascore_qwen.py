"""VQAScore's Qwen2.5-VL backend, as t2v_metrics 3.0 computes it (`Qwen2VLModel.forward`).

The reference, per image–prompt pair: one user turn (the image, then `Does this image show
"{prompt}"?`) in the checkpoint's chat template with the generation prompt; the image through
qwen_vl_utils' `process_vision_info` and then the checkpoint's processor; `generate(max_new_tokens=1,
do_sample=False, output_scores=True)`; the score is `softmax(scores[0])[tokenizer.encode("Yes")[0]]`.
Three quirks follow from that and are reproduced here:

* `scores` are the *processed* logits: greedy `generate` applies the checkpoint's
  generation_config.json logits processors, and the Qwen2.5-VL Instruct checkpoints set
  `repetition_penalty: 1.05` — so every token already in the prompt (the image placeholders,
  the chat markup, the prompt's words) has its logit divided by 1.05 if positive, multiplied if
  negative, before the softmax. The sampling settings (temperature, top_p, top_k) are ignored by
  greedy decoding. evalkit applies the checkpoint's penalty to each row's own prompt tokens
  (transformers' RepetitionPenaltyLogitsProcessor), to the float32 last-position logits as
  `generate` does; no other processor is active for these checkpoints.
* the answer is the first token of the tokenized answer (`encode(answer)[0]`): "Yes" is one
  token in Qwen's vocabulary, but a longer answer would be scored by its first token only.
* the image is resized twice. qwen_vl_utils 0.0.14 resizes to multiples of 28 px (patch 14 ×
  merge 2, whatever the checkpoint's), between 4·28² and 16384·28² pixels, aspect ratio ≤ 200,
  with PIL's bicubic `Image.resize`; the processor then resizes to its own factor and pixel bounds,
  which for every Qwen2/2.5-VL checkpoint (factor 28, 3136..12845056 pixels) leaves it unchanged.
  The processor is the checkpoint's torchvision image processor, as the reference's AutoProcessor
  picks the fast one.

Batching: the reference scores one pair per `generate`; evalkit runs one forward over a
left-padded batch (mask, M-RoPE positions from the mask, `logits_to_keep=1`), so a score does not
depend on its batch beyond float noise. The reference loads bfloat16 with flash-attention 2 on
CUDA; evalkit uses PyTorch's SDPA attention (flash-attention is not a dependency).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics.tifa.vqa import CheckpointFolder, model_device, padded
from evalkit.metrics.tifa.vqa_qwen import IMAGE_TOKEN, chat_ids, load_qwen_vl

# qwen_vl_utils 0.0.14 vision_process: image_patch_size 14 x SPATIAL_MERGE_SIZE 2, IMAGE_MIN/MAX_TOKEN_NUM, MAX_RATIO
UTILS_FACTOR = 28
UTILS_MIN_PIXELS = 4 * UTILS_FACTOR ** 2
UTILS_MAX_PIXELS = 16384 * UTILS_FACTOR ** 2
UTILS_MAX_RATIO = 200


def utils_size(height: int, width: int) -> tuple[int, int]:
    """qwen_vl_utils' `smart_resize` with fetch_image's defaults: (height, width) in multiples of 28.

    Not transformers' smart_resize, which differs at the edges (where it clamps to one factor)."""
    if max(height, width) / min(height, width) > UTILS_MAX_RATIO:
        raise EvalkitError(f"VQAScore (qwen2.5-vl): an image of {width}x{height} px has an aspect ratio over "
                           f"{UTILS_MAX_RATIO}, which Qwen-VL's image loader refuses", "score images of sane shape")
    f = UTILS_FACTOR
    h_bar, w_bar = max(f, round(height / f) * f), max(f, round(width / f) * f)
    if h_bar * w_bar > UTILS_MAX_PIXELS:
        beta = math.sqrt(height * width / UTILS_MAX_PIXELS)
        h_bar, w_bar = math.floor(height / beta / f) * f, math.floor(width / beta / f) * f
    elif h_bar * w_bar < UTILS_MIN_PIXELS:
        beta = math.sqrt(UTILS_MIN_PIXELS / (height * width))
        h_bar, w_bar = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
    return h_bar, w_bar


def utils_resize(image: Image.Image) -> Image.Image:
    """What `process_vision_info` hands the processor: RGB, resized (PIL's default filter, bicubic)."""
    height, width = utils_size(image.height, image.width)
    return image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)


def question_messages(question: str) -> list[dict[str, Any]]:
    """The reference's one user turn: the image, then the question alone."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


@dataclass
class QwenYesScorer:
    """P(answer) as the first generated token of a loaded Qwen2.5-VL / Qwen2-VL checkpoint (module doc)."""

    model: Any
    processor: Any
    image_processor: Any
    answer_id: int
    penalty: float  # the checkpoint's generation_config repetition_penalty (1.0: none)
    name: str

    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        self.model = self.model.to(device=device, dtype=dtype)

    def prepare(self, question: str, image: Image.Image) -> dict[str, Any]:
        pixels = self.image_processor(images=[utils_resize(image)], return_tensors="pt")
        grid = pixels["image_grid_thw"]
        n_tokens = int(grid.prod()) // int(self.image_processor.merge_size) ** 2
        return {"pixel_values": pixels["pixel_values"], "grid": grid,
                "ids": chat_ids(self.processor, question_messages(question), n_tokens, self.name)}

    def score(self, prepared: Sequence[dict[str, Any]]) -> list[float]:
        from transformers import RepetitionPenaltyLogitsProcessor

        device = model_device(self.model)
        ids = [p["ids"] for p in prepared]
        input_ids, mask = padded(ids, self.processor.tokenizer.pad_token_id, "left", device)
        image_token_id = self.processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        with torch.inference_mode():
            out = self.model(input_ids=input_ids, attention_mask=mask,
                             pixel_values=torch.cat([p["pixel_values"] for p in prepared]).to(device, self.model.dtype),
                             image_grid_thw=torch.cat([p["grid"] for p in prepared]).to(device),
                             mm_token_type_ids=(input_ids == image_token_id).long() * mask,
                             use_cache=False, logits_to_keep=1)
            logits = out.logits[:, -1, :].float()
            penalty = RepetitionPenaltyLogitsProcessor(penalty=self.penalty) if self.penalty != 1.0 else None
            scores = []
            for row, row_ids in enumerate(ids):
                row_logits = logits[row:row + 1]
                if penalty is not None:  # on the row's own prompt tokens: padding is not part of its prompt
                    row_logits = penalty(torch.tensor([row_ids], device=device), row_logits.clone())
                scores.append(float(torch.softmax(row_logits, dim=-1)[0, self.answer_id]))
        return scores


def load_qwen_yes(folder: Path, answer: str, *, name: str) -> QwenYesScorer:
    """A Qwen2.5-VL / Qwen2-VL checkpoint folder (weights, processor, generation config) in float32."""
    checkpoint = CheckpointFolder(folder, name, "Qwen-VL",
                                  "give the folder of a Qwen2.5-VL Instruct checkpoint with its processor files")
    vqa = load_qwen_vl(checkpoint, dtype=torch.float32, image_backend="torchvision")
    penalty = vqa.model.generation_config.repetition_penalty
    return QwenYesScorer(model=vqa.model, processor=vqa.processor, image_processor=vqa.image_processor,
                         answer_id=int(vqa.tokenizer.encode(answer)[0]), penalty=float(penalty), name=name)
