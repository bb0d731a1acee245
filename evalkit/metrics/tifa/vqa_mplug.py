"""mPLUG-large as TIFA's "mplug-large" VQA backend: the reference's default VQA model, batched.

What the reference does (tifascore/vqa_models.py, class `MPLUG`: modelscope's
`pipeline('visual-question-answering', 'damo/mplug_visual-question-answering_coco_large_en')`,
called once per question with the image's path), reproduced here:

* image: modelscope's LoadImage (`Image.open`, `ImageOps.exif_transpose`, `.convert('RGB')`; evalkit
  opens the file and the backend transposes), then MPlugPreprocessor's transform: a square PIL
  bicubic resize to `image_res` (504), `ToTensor`, CLIP's mean/std;
* question: lower-cased, `BertTokenizer` (`[CLS] … [SEP]`, at most 25 tokens); no other cleaning;
* answer: modelscope's TextGenerator beam search (beam 5, 1..10 tokens, GNMT length penalty 0.6,
  `mplug.beam_search`) and `decode(ids, skip_special_tokens=True)`: every special token dropped,
  word pieces joined, BERT's space clean-up (" ?" -> "?", " 's" -> "'s", ...).

Each image is encoded once per call and its questions decode together (the reference re-encodes
the image per question; only float noise differs). Weights: the folder `mplug_convert` writes from
modelscope's checkpoint (safetensors, no pickle at run time).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, ImageOps

from evalkit.metrics.tifa.mplug import END_TOKEN, MPlugConfig, MPlugVQA, beam_search
from evalkit.metrics.tifa.mplug_convert import CONFIG_FILE, FORMAT, VOCAB_FILE, WEIGHTS_FILE
from evalkit.metrics.tifa.vqa import DEFAULT_MAX_ROWS, BatchedVQA, CheckpointFolder, model_device, padded

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# transformers' clean_up_tokenization, which BertTokenizer's decode applies (clean_up_tokenization_spaces=True)
CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def pixels(image: Image.Image, resolution: int) -> torch.Tensor:
    """MPlugPreprocessor's transform: Resize((R, R), BICUBIC) on the PIL image, ToTensor, Normalize."""
    import numpy as np

    resized = ImageOps.exif_transpose(image).convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    return x.sub(mean).div(std)


def decode_answer(tokens: Sequence[str]) -> str:
    """BertTokenizer.decode(ids, skip_special_tokens=True) of tokens already free of special ones."""
    text = " ".join(tokens).replace(" ##", "").strip()
    for before, after in CLEAN_UP:
        text = text.replace(before, after)
    return text


@dataclass
class MPlugBatched(BatchedVQA):
    """A converted mPLUG checkpoint: the model-specific parts of `vqa.BatchedVQA`'s answer loop."""

    model: Any  # MPlugVQA
    tokenizer: Any
    name: str = "mplug"
    max_rows: int = DEFAULT_MAX_ROWS
    shows_choices: bool = False

    def encode(self, images: Sequence[Image.Image]) -> torch.Tensor:
        device = model_device(self.model)
        dtype = next(self.model.parameters()).dtype
        batch = torch.stack([pixels(im, self.model.config.image_res) for im in images]).to(device, dtype)
        return self.model.encode_images(batch)

    def prompt(self, encoded: Any, image: int, question: str, choices: Sequence[str]) -> list[int]:
        ids: list[int] = self.tokenizer(question.lower(), truncation=True,
                                        max_length=self.model.config.question_tokens).input_ids
        return ids

    def generate(self, encoded: torch.Tensor, images: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        config, device = self.model.config, encoded.device
        ids, mask = padded(prompts, 0, "right", device)  # padding length never changes an answer
        memory, memory_mask = self.model.fuse(encoded[torch.tensor(list(images), device=device)], ids, mask)

        def step_logits(rows: torch.Tensor, prefixes: torch.Tensor) -> torch.Tensor:
            return self.model.decoder_logits(prefixes, memory[rows], memory_mask[rows])[:, -1, :]

        with torch.inference_mode():
            beams = beam_search(step_logits, len(prompts), device, config.beam_size, config.max_length,
                                config.min_length)
        longest = max(len(b.ids) for b in beams)
        return torch.tensor([b.ids + [0] * (longest - len(b.ids)) for b in beams])

    def decode(self, generated: torch.Tensor, prompts: Sequence[Sequence[int]]) -> list[str]:
        skipped = set(self.tokenizer.all_special_ids)
        return [decode_answer(self.tokenizer.convert_ids_to_tokens([i for i in row if i not in skipped]))
                for row in generated.tolist()]


def load_mplug(checkpoint: CheckpointFolder, *, dtype: torch.dtype, max_rows: int = DEFAULT_MAX_ROWS) -> MPlugBatched:
    """MPlugVQA + BertTokenizer from the folder `mplug_convert` writes (no network, no pickle)."""
    from safetensors.torch import load_file
    from transformers import BertTokenizer

    folder = checkpoint.folder
    config_path = folder / CONFIG_FILE
    hint = ("convert modelscope's checkpoint once: python -m evalkit.metrics.tifa.mplug_convert "
            "MODELSCOPE_DIR OUT_DIR, and point the card at OUT_DIR")
    if not config_path.is_file() or not (folder / WEIGHTS_FILE).is_file() or not (folder / VOCAB_FILE).is_file():
        raise checkpoint.refuse(f"is not a converted mPLUG folder ({CONFIG_FILE}, {WEIGHTS_FILE}, {VOCAB_FILE})",
                                hint)
    with checkpoint.loading():
        doc = json.loads(config_path.read_text(encoding="utf-8"))
        if doc.get("format") != FORMAT:
            raise ValueError(f"{CONFIG_FILE} format is {doc.get('format')!r}, not {FORMAT}")
        model = MPlugVQA(MPlugConfig.from_json(doc))
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
        tokenizer = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tokenizer.convert_tokens_to_ids("[SEP]") != END_TOKEN:
        raise checkpoint.refuse("has a vocabulary whose [SEP] is not id 102",
                                "mPLUG's beam search starts at id 101 and stops at 102 (bert-base-uncased)")
    return MPlugBatched(model=model.to(dtype), tokenizer=tokenizer, name=checkpoint.name, max_rows=max_rows)
