"""Tiny mPLUG checkpoints written from code: modelscope's folder layout (for the converter and the
parity tests against modelscope's own code) and a converted folder (for the card's tests).

The vocabulary keeps bert-base-uncased's special-token ids ([PAD] 0, [unused0..98], [UNK] 100,
[CLS] 101, [SEP] 102, [MASK] 103), because mPLUG's beam search hard-codes 101 and 102; then
letters, word pieces and TIFA's common words, so any question tokenizes. The sizes exercise every
branch of the reference: a vision width unlike the BERT width (visn_fc), a fusion encoder that
builds more layers than it runs, and `stride_layer` 2 (its joint image-text layer).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from evalkit.tiny.tifa_models import LETTERS, TIFA_WORDS

BERT = {"hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "model_type": "bert", "pad_token_id": 0,
        "type_vocab_size": 2, "add_cross_attention": False, "use_cache": False, "gradient_checkpointing": False,
        "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128, "max_position_embeddings": 64,
        "encoder_width": 64, "num_hidden_layers": 4, "fusion_layers": 3, "stride_layer": 2,
        "text_encoder_layers": 2, "text_decode_layers": 2}
# config.yaml: modelscope's ViT-B-16 branch (its ViT-L-14 branch hard-codes width 1024)
OUTER = {"task": "visual-question-answering", "bert_config": "config_bert.json", "image_res": 32,
         "vision_width": 768, "distill": False, "clip_name": "ViT-B-16", "clip_embed_dim": 32,
         "clip_image_resolution": 224, "clip_vision_layers": 1, "clip_vision_width": 768,
         "clip_vision_patch_size": 16, "clip_context_length": 8, "clip_vocab_size": 50,
         "clip_transformer_width": 64, "clip_transformer_heads": 2, "clip_transformer_layers": 1,
         "beam_size": 3, "min_length": 1, "max_length": 5}
CONFIGURATION = {"framework": "pytorch", "task": "visual-question-answering", "model": {"type": "mplug"},
                 "pipeline": {"type": "visual-question-answering"},
                 "preprocessor": {"type": "mplug-tasks-preprocessor"}}


def vocabulary(words: Sequence[str] = TIFA_WORDS) -> list[str]:
    specials = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return list(dict.fromkeys([*specials, *LETTERS, *"?.,'", *(f"##{c}" for c in LETTERS), *words]))


def write_modelscope_layout(folder: Path, beam_size: int = 3, max_length: int = 5) -> Path:
    """vocab.txt, config_bert.json, config.yaml and configuration.json as modelscope's model folder has
    them; the weights (pytorch_model.bin) are the caller's (modelscope's own code writes them in the
    parity tests)."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "config_bert.json").write_text(json.dumps({**BERT, "vocab_size": len(vocab)}, indent=2),
                                             encoding="utf-8")
    outer = {**OUTER, "beam_size": beam_size, "max_length": max_length}
    (folder / "config.yaml").write_text(yaml.safe_dump(outer), encoding="utf-8")
    (folder / "configuration.json").write_text(json.dumps(CONFIGURATION, indent=2), encoding="utf-8")
    return folder


def write_tiny_mplug(folder: Path, seed: int = 0, std: float = 0.1) -> Path:
    """A converted tiny mPLUG (what `mplug_convert` writes) with random weights, for cards and the demo:
    the random state dict is written in modelscope's key layout beside it (FOLDER-modelscope/) and
    converted, so the converter's path is the one real weights take."""
    import torch

    from evalkit.metrics.tifa.mplug import MPlugConfig, MPlugVQA
    from evalkit.metrics.tifa.mplug_convert import SOURCE_WEIGHTS, convert_mplug, read_config

    source = write_modelscope_layout(folder.with_name(folder.name + "-modelscope"))
    numbers = read_config(source)
    start = numbers.pop("fusion_built") - numbers["fusion_layers"]
    torch.manual_seed(seed)
    model = MPlugVQA(MPlugConfig.from_json(numbers))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, std)
    state = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("visual."):
            key = f"visual_encoder.{key}"
        elif key.startswith("fusion."):
            parts = key.split(".")
            key = ".".join(["fusion_encoder", "encoder", "layer", str(int(parts[3]) + start), *parts[4:]])
        state[key] = tensor
    torch.save(state, source / SOURCE_WEIGHTS)
    return convert_mplug(source, folder)
