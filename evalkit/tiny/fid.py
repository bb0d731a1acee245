"""Random-weight FID Inception weights and synthetic "COCO" reference images (tests and demo).

The real extractor is the 2015-12-05 TF Inception port; a random one costs the same and
exercises the same loading path. PyTorch's default init gives near-zero pool features (FID
prints 0.0), so convolutions get He init and batch norms unit scale, as ENVIRONMENT.md notes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

from evalkit.prompts.sets import Prompt


def write_random_inception(path: Path, seed: int = 0) -> Path:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    # Build the architecture without its release weights: skip the load of the empty state dict.
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None):
        model = FeatureExtractorInceptionV3("random", ["2048"], feature_extractor_weights_path=empty)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Conv2d):  # He init keeps activations alive through 90+ layers
                fan_in = mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
            elif isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.fill_(1.0)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
                mod.reset_running_stats()  # mean 0, var 1: a fresh model's counters are already 0
            elif isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * 0.01)
                mod.bias.zero_()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def write_synthetic_coco(folder: Path, prompts: Iterable[Prompt], seed: int = 1) -> Path:
    """One JPEG per COCO prompt, named as in val2014, of assorted (landscape, portrait) sizes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, prompt in enumerate(prompts):
        h, w = (48, 72) if i % 2 else (90, 60)
        base = rng.integers(0, 256, (1, 1, 3))
        noise = rng.integers(-60, 60, (h, w, 3))
        pixels = np.clip(base + noise + np.linspace(0, 80, w)[None, :, None], 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / prompt.data["coco_file"], quality=95)
    return folder
