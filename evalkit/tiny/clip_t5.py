"""A tiny random CLIP-FlanT5 in the reference's layout (tests and demo): tokenizer, CLIP tower, checkpoint.

The folders are what a VQAScore card names: `model` (config.json with the `mm_*` fields of a
CLIP-T5 config + model.safetensors under t2v_metrics' parameter names), `tokenizer` (a T5 tokenizer,
`</s>` appended, built offline), `vision` (a CLIP model with its processor config). Random weights
with a large init so the likelihood of "Yes" varies between images and prompts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

VOCAB_WORDS = ["does", "this", "figure", "show", "a", "an", "the", "red", "blue", "green", "cube", "cat", "dog",
               "on", "of", "please", "answer", "yes", "no", "user", "assistant", "chat", "between", "curious",
               "and", "artificial", "intelligence", "gives", "helpful", "detailed", "polite", "answers", "to",
               "questions", "photo", "two"]


def clip_t5_config(vocab_size: int, vision_folder: Path, vision_width: int) -> dict[str, Any]:
    """A T5 v1.1 (FlanT5's gated-gelu, untied head) config with CLIP-T5's multimodal fields."""
    from transformers import T5Config

    settings: dict[str, Any] = {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0}
    t5 = T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                  num_heads=4, feed_forward_proj="gated-gelu", initializer_factor=4.0, **settings).to_dict()
    t5.pop("scale_decoder_outputs", None)  # transformers 5 derives it from tie_word_embeddings, set below
    return {**t5, "tie_word_embeddings": False, "model_type": "clip_t5",
            "architectures": ["CLIPT5ForConditionalGeneration"],
            "mm_vision_tower": str(vision_folder), "mm_hidden_size": vision_width, "mm_projector_type": "mlp2x_gelu",
            "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "use_mm_proj": True}


def write_clip_t5_checkpoint(folder: Path, vocab_size: int, vision_folder: Path, seed: int = 0) -> Path:
    """config.json + model.safetensors of a random ClipT5 (evalkit's class), saved under the reference's names."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig

    from evalkit.metrics.clip_t5 import ClipT5, checkpoint_name, t5_config_of

    vision = CLIPVisionConfig.from_pretrained(str(vision_folder))
    config = clip_t5_config(vocab_size, vision_folder, int(vision.hidden_size))
    torch.manual_seed(seed)
    net = ClipT5(t5_config_of(config), vision, tied_head=False)
    with torch.no_grad():
        for module in net.mm_projector.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=1.0 / module.in_features ** 0.5)
        torch.nn.init.normal_(net.t5.lm_head.weight, std=0.05)  # an untied head, as FlanT5's
    folder.mkdir(parents=True, exist_ok=True)
    state = {checkpoint_name(k): v.contiguous() for k, v in net.state_dict().items()}
    for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):  # tied to shared.weight
        state.pop(alias, None)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def write_tiny_clip_t5(folder: Path, seed: int = 0) -> dict[str, Path]:
    """The three folders of a tiny VQAScore card: model, tokenizer, vision."""
    from evalkit.tiny.clip import build_tiny_clip, write_clip_processor
    from evalkit.tiny.dit import tiny_t5_tokenizer

    folder = Path(folder)
    vision = write_clip_processor(build_tiny_clip(folder / "vision", seed=seed))
    tokenizer = tiny_t5_tokenizer(model_max_length=2048)
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    model = write_clip_t5_checkpoint(folder / "model", len(tokenizer), vision, seed=seed)
    return {"model": model, "tokenizer": folder / "tokenizer", "vision": vision}
