"""The image side of a CLIP checkpoint (vision tower + projection), loaded strictly without its text tower.

CMMD and the aesthetic score need only image embeddings of openai/clip-vit-large-patch14(-336),
full CLIP checkpoints. `CLIPVisionModelWithProjection.from_pretrained` on them loads, but logs every
text tensor as an unexpected key — a report that would also bury a *missing* vision tensor. Here
the vision tensors are read from the safetensors files by name and loaded with strict=True, so a
missing or misshapen one is an error, and the text tower never reaches memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError

VISION_PREFIXES = ("vision_model.", "visual_projection.")


def load_clip_vision(folder: Path) -> Any:
    """transformers' CLIPVisionModelWithProjection (eval mode, float32) of a CLIP folder."""
    from safetensors import safe_open
    from transformers import CLIPConfig, CLIPVisionConfig, CLIPVisionModelWithProjection

    if _model_type(folder) == "clip":
        full: Any = CLIPConfig.from_pretrained(str(folder))  # transformers types its sub-configs loosely
        vision = CLIPVisionConfig(**full.vision_config.to_dict())
        vision.projection_dim = int(full.projection_dim)
    else:
        vision = CLIPVisionConfig.from_pretrained(str(folder))
    state = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                if key.startswith(VISION_PREFIXES):
                    state[key] = f.get_tensor(key)
    model = CLIPVisionModelWithProjection(vision)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise EvalkitError(f"{folder} is not a CLIP checkpoint with a vision tower and projection "
                           f"({str(e).splitlines()[0]})", "point the card at a transformers CLIP folder") from e
    return model.eval()


def _model_type(folder: Path) -> str:
    import json

    try:
        return str(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type", ""))
    except (OSError, ValueError) as e:
        raise EvalkitError(f"{folder} has no readable config.json",
                           "point the card at a transformers CLIP folder") from e
