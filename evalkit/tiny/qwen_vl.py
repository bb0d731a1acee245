"""A tiny random Qwen2.5-VL (or Qwen2-VL) checkpoint written from code, with an offline processor.

The `qwen2.5-vl` VQA backend's tests run the real transformers code path (processor, chat
template, vision tower with windowed attention and patch merging, M-RoPE positions, `generate`)
on this. The tokenizer is byte-level BPE like Qwen's, so any text tokenizes; its vocabulary is
the 256 byte symbols, a few merges and Qwen's special tokens (same strings, other ids). The chat
template is Qwen2-VL's (Qwen2.5-VL ships the same one): a default system turn, then the user
turn with `<|vision_start|><|image_pad|><|vision_end|>` where the image goes. The image
processor works at 8 px granularity (patch 4, merge 2) between 16x16 and 32x32 pixels, so an
image is 4 to 16 placeholder tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import torch

from evalkit.generation.tokenizer import _byte_symbols

if TYPE_CHECKING:
    from transformers import PreTrainedModel

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")
MERGES = ("t h", "th e", "Ġ t", "Ġt h", "Ġth e", "i s", "Ġ is", "a n", "e r", "o n", "Ġ a")

# Qwen2-VL's chat template (also Qwen2.5-VL's), as its checkpoints ship it in chat_template.json.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class _SpecialIds(TypedDict):
    """The special-token ids both Qwen-VL configs take."""

    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int


def write_tiny_qwen_vl(folder: Path, seed: int = 0, *, version: str = "2.5") -> Path:
    """A 2-layer Qwen2.5-VL (`version="2.5"`) or Qwen2-VL (`"2"`), hidden 32, with its processor.

    Weights are initialised wide (std 0.3) so greedy answers depend on the image and the
    question; a near-constant random model would hide an image-to-row mix-up.
    """
    from transformers import Qwen2_5_VLProcessor, Qwen2Tokenizer, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    if version not in ("2", "2.5"):
        raise ValueError(f"version must be '2' or '2.5', got {version!r}")
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    for merge in MERGES:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    # merges as (left, right) pairs, what tokenizers' BPE takes; transformers annotates them as list[str]
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in MERGES],  # type: ignore[misc]
                               additional_special_tokens=list(SPECIAL_TOKENS[1:]))
    image_processor = Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, temporal_patch_size=2,
                                               min_pixels=16 * 16, max_pixels=32 * 32)
    ids = {t: vocab[t] for t in SPECIAL_TOKENS}
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
            "initializer_range": 0.3, "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2], "rope_theta": 10000.0}}
    vision: dict[str, int | float | list[int]] = {
        "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4, "patch_size": 4,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "initializer_range": 0.3}
    special = _SpecialIds(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                          vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(seed)
    model: PreTrainedModel
    if version == "2.5":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        # windows of 2x2 merged units (16 px), the last block with full attention, as in the real tower
        vision |= {"out_hidden_size": 32, "window_size": 16, "fullatt_block_indexes": [1]}
        model = Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special, tie_word_embeddings=False))
    else:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        vision = {k: v for k, v in vision.items() if k != "intermediate_size"} | {"embed_dim": 32, "mlp_ratio": 2}
        model = Qwen2VLForConditionalGeneration(
            Qwen2VLConfig(text_config=text, vision_config=vision, **special, tie_word_embeddings=False))
    model.eval()
    folder = Path(folder)
    # the Instruct checkpoints' generation_config.json: sampling defaults the backend must override
    model.generation_config.update(eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
                                   pad_token_id=ids["<|endoftext|>"], do_sample=True, temperature=0.1, top_p=0.001,
                                   top_k=1, repetition_penalty=1.05)
    model.save_pretrained(str(folder))
    processor_class = Qwen2_5_VLProcessor if version == "2.5" else Qwen2VLProcessor
    # the processor class insists on a video processor; evalkit never sends videos
    video_processor = Qwen2VLVideoProcessor(patch_size=4, merge_size=2, temporal_patch_size=2)
    processor = processor_class(image_processor=image_processor, tokenizer=tokenizer,
                                video_processor=video_processor, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(str(folder))
    return folder
