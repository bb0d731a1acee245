"""Tiny random checkpoints in the reference packages' layouts, and the SPEC.json each parity script reads.

`parity/ref_imagereward.py` and `parity/ref_hpsv2.py` run image-reward 1.5 and hpsv2 1.2.0 (in
`.venv-ref`) on a spec naming the checkpoint files and the model shapes the packages must be
patched to. Two callers need the same checkpoints and specs: the parity tests
(tests/test_parity_reference.py, which compare scores) and bench/package_baselines.py (which times
the packages' own scoring calls against evalkit's on the same weights). Building them here, once,
keeps the two from drifting apart: a bench that timed a differently shaped model than the one the
parity tests check would compare nothing. Callers add the spec's "cases" (prompts and image paths).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evalkit.tiny.hpsv2 import tiny_config, write_tiny_checkpoint
from evalkit.tiny.imagereward import TinyImageRewardConfig, tokenizer_tokens, write_tiny_original

# ImageReward's MLP is hard-wired 1024→128→64→16→1 after the text width; keep that so the package's own
# MLP class holds the head, and BLIP_Pretrain's embed_dim 256 for its (unused) projections. The ViT has
# head dim 64 (as BLIP's) and is tiny.
IR_REFERENCE_CONFIG = dataclasses.replace(TinyImageRewardConfig(), head_widths=(32, 1024, 128, 64, 16, 1),
                                          embed_dim=256)
HPS_REFERENCE_VERSION = "v2.1"


@dataclass(frozen=True)
class ImageRewardReference:
    """The spec for ref_imagereward.py (without "cases") and the converted folder evalkit's card points at."""

    spec: dict[str, Any]
    converted: Path


def write_reference_vocab(folder: Path) -> Path:
    """The tiny vocabulary in bert-base-uncased's hub form (vocab.txt + tokenizer_config.json), which the
    reference's slow BertTokenizer.from_pretrained reads (evalkit's transformers writes only tokenizer.json)."""
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("".join(f"{t}\n" for t in tokenizer_tokens()), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}),
                                                  encoding="utf-8")
    return folder


def imagereward_reference(folder: Path, seed: int = 0,
                          config: TinyImageRewardConfig = IR_REFERENCE_CONFIG) -> ImageRewardReference:
    """An ImageReward.pt + med_config.json + hub-form tokenizer (what the package loads) and their
    conversion (what evalkit loads): the same weights on both sides."""
    from evalkit.metrics.imagereward_convert import convert_imagereward

    folder = Path(folder)
    original = write_tiny_original(folder / "original", seed=seed, config=config)
    converted = convert_imagereward(original.pt, original.med_config, folder / "converted",
                                    tokenizer=original.tokenizer)
    hub_vocab = write_reference_vocab(folder / "bert-base-uncased-hub")
    spec = {"pt": str(original.pt), "med_config": str(original.med_config), "tokenizer": str(hub_vocab),
            "vit": {"image_size": config.image_size, "patch_size": config.patch_size, "width": config.vit_width,
                    "layers": config.vit_layers, "heads": config.vit_heads}}
    return ImageRewardReference(spec, converted)


def hpsv2_reference_checkpoint(folder: Path, seed: int = 0) -> Path:
    """The tiny HPS checkpoint in float16, as the official *_compressed.pt files (both sides load it into float32)."""
    return write_tiny_checkpoint(Path(folder), version=HPS_REFERENCE_VERSION, seed=seed, dtype=torch.float16)


def hpsv2_reference_spec(checkpoint: Path, antialias: bool) -> dict[str, Any]:
    """The spec for ref_hpsv2.py (without "cases"). antialias=False turns off the tensor resize's
    antialias inside hpsv2 (torchvision < 0.17 behaviour, what evalkit's shipped card pins)."""
    return {"checkpoint": str(checkpoint), "config": tiny_config(), "hps_version": HPS_REFERENCE_VERSION,
            "tensor_resize_antialias": None if antialias else False}
