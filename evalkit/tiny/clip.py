"""A tiny random CLIP model folder and metric cards that point at it (tests and demo)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

from evalkit.generation.tokenizer import clip_vocab_size, write_clip_tokenizer


def build_tiny_clip(folder: Path, seed: int = 0, image_size: int = 32, intermediate_size: int = 64) -> Path:
    torch.manual_seed(seed)
    vocab = clip_vocab_size()
    text = CLIPTextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                          num_hidden_layers=2, projection_dim=16, max_position_embeddings=77,
                          bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=intermediate_size, num_attention_heads=2,
                              num_hidden_layers=2,
                              image_size=image_size, patch_size=8, projection_dim=16)
    model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16))
    folder = Path(folder)
    model.save_pretrained(str(folder))
    write_clip_tokenizer(folder)
    return folder


def write_clip_processor(folder: Path, size: int = 32) -> Path:
    """A CLIP processor folder as laion/CLIP-ViT-H-14-laion2B-s32B-b79K ships it: the tokenizer and a
    preprocessor_config.json in the old feature-extractor form (ints for sizes), which transformers
    loads as the slow CLIPImageProcessor — what PickScore's reference snippet ran."""
    import json

    from evalkit.metrics.preprocess import CLIP_MEAN, CLIP_STD

    folder = write_clip_tokenizer(Path(folder))
    config = {"crop_size": size, "do_center_crop": True, "do_normalize": True, "do_resize": True,
              "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": list(CLIP_MEAN),
              "image_std": list(CLIP_STD), "resample": 3, "size": size}
    (folder / "preprocessor_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def write_tiny_pickscore(folder: Path, seed: int = 0) -> dict[str, Path]:
    """A random tiny CLIP as the PickScore model and its processor folder: the card's two models."""
    import shutil

    folder = Path(folder)
    model = build_tiny_clip(folder / "model", seed=seed)
    processor = write_clip_processor(folder / "processor")
    shutil.copy(model / "config.json", processor / "config.json")  # laion's repo has its model config too
    return {"model": model, "processor": processor}


def write_tiny_aesthetic(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A random tiny CLIP (MLP width 4× as OpenAI's CLIP builds it) and a random aesthetic head .pth
    for its 16-d embedding, the authors' module names (`layers.N`): the card's clip model and head."""
    from evalkit.metrics.aesthetic import aesthetic_head

    folder = Path(folder)
    clip = build_tiny_clip(folder / "clip", seed=seed, intermediate_size=128)
    torch.manual_seed(seed + 1)
    head = aesthetic_head(16)
    for module in head:
        if isinstance(module, torch.nn.Linear):  # default init gives near-constant outputs through 5 layers
            torch.nn.init.normal_(module.weight, std=1.0 / module.in_features ** 0.5)
            torch.nn.init.normal_(module.bias, std=0.5)
    path = folder / "aesthetic-head.pth"
    torch.save({f"layers.{k}": v for k, v in head.state_dict().items()}, path)
    return clip, path


def write_tiny_cmmd(folder: Path, seed: int = 0) -> Path:
    """A random tiny CLIP folder with its preprocessor_config.json, as openai/clip-vit-large-patch14-336 has
    (CMMD's reference reads the crop size from it)."""
    return write_clip_processor(build_tiny_clip(Path(folder), seed=seed))


def write_card(path: Path, name: str, implementation: str, prompt_set: str, models: dict[str, Path],
               params: dict[str, object] | None = None, higher_is_better: bool = True,
               headline: bool = False) -> Path:
    """A metric card whose models are local folders (what the demo and tests score with)."""
    card = {"name": name, "implementation": implementation, "prompt_set": prompt_set,
            "higher_is_better": higher_is_better, "display_name": f"{name} (tiny random model)",
            "models": {role: {"source": str(folder)} for role, folder in models.items()},
            "params": params or {}, **({"headline": True} if headline else {})}
    path.write_text(yaml.safe_dump(card, sort_keys=False), encoding="utf-8")
    return path
