"""A tiny random HPS checkpoint in the official layout, and cards that point at it (tests and demo).

xswu/HPSv2 ships `HPS_v2_compressed.pt` / `HPS_v2.1_compressed.pt`: a torch pickle of
`{'state_dict': <open_clip ViT-H-14 CLIP state dict>}` (hpsv2.img_score.score loads
`checkpoint['state_dict']`). The tiny one is the same layout for an open_clip CLIP built from
`TINY_CONFIG`, an open_clip model config dict (the form `open_clip.get_model_config` returns),
which a card passes as `params.architecture` instead of the name ViT-H-14. Nothing is downloaded:
open_clip's tokenizer vocabulary ships with the package.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from evalkit.metrics.hpsv2 import HPS_VERSIONS, build_open_clip
from evalkit.tiny.clip import write_card

if TYPE_CHECKING:
    from open_clip.model import CLIP

TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def tiny_config() -> dict[str, Any]:
    return copy.deepcopy(TINY_CONFIG)


def build_tiny_hps_model(seed: int = 0) -> CLIP:
    """The tiny open_clip CLIP, random; the vision and text projections are re-drawn at unit gain so
    cosines spread (open_clip's init gives nearly identical random scores)."""
    torch.manual_seed(seed)
    model = build_open_clip(tiny_config())
    with torch.no_grad():
        model.visual.proj.normal_(0.0, 1.0)
        model.text_projection.normal_(0.0, 1.0)
    return model.eval()


def write_tiny_checkpoint(folder: Path, version: str = "v2.1", seed: int = 0,
                          dtype: torch.dtype = torch.float32) -> Path:
    """`folder/HPS_v2*.pt` = {'state_dict': tiny model's state dict}, as the official files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in build_tiny_hps_model(seed).state_dict().items()}
    path = folder / HPS_VERSIONS[version]
    torch.save({"state_dict": state}, path)
    return path


def write_tiny_card(path: Path, name: str, source: Path, version: str = "v2.1", antialias: bool = False,
                    prompt_set: str = "tifa-v1.0", **params: Any) -> Path:
    """A card for the tiny checkpoint: same params as metrics/hpsv2.yaml, the config dict as architecture."""
    return write_card(path, name, "hpsv2", prompt_set, {"hps": Path(source)},
                      params={"version": version, "file": HPS_VERSIONS[version], "architecture": tiny_config(),
                              "antialias": antialias, "scale": "cosine", **params})
