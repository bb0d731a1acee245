"""A tiny "training run" folder laid out like diffusers' training scripts leave it.

train_text_to_image.py writes `checkpoint-N/` folders (accelerate state: unet/, unet_ema/
with --use_ema, optimizer.bin, random_states_0.pkl, ...) and, at the end, the final pipeline
at the folder's root. Here the checkpoints are the base UNet moved along a seeded random
direction, a stand-in for training that gives each step different, reproducible weights.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import torch

# not `from diffusers import`: to a type checker those names are torch-less placeholder classes
from diffusers.models import ModelMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline


def write_training_folder(folder: Path, pipe: DiffusionPipeline, steps: Sequence[int] = (100, 200, 300),
                          ema: bool = True, seed: int = 0) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(folder))
    denoiser_name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    denoiser = getattr(pipe, denoiser_name)
    start = {k: v.detach().clone() for k, v in denoiser.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    direction = {k: torch.randn(v.shape, generator=generator) * 0.02 for k, v in start.items()}
    for step in steps:
        out = folder / f"checkpoint-{step}"
        _save_denoiser(denoiser, start, direction, step / 100.0, out / denoiser_name)
        if ema:
            _save_denoiser(denoiser, start, direction, step / 100.0 * 0.8, out / f"{denoiser_name}_ema")
        # Files accelerate writes beside the models; evalkit must never unpickle them.
        torch.save({"state": {}, "param_groups": []}, out / "optimizer.bin")
        (out / "random_states_0.pkl").write_bytes(pickle.dumps({"step": step}))
    denoiser.load_state_dict(start)
    return folder


def _save_denoiser(model: ModelMixin, start: dict[str, torch.Tensor], direction: dict[str, torch.Tensor],
                   amount: float, path: Path) -> None:
    model.load_state_dict({k: start[k] + amount * direction[k] for k in start})
    model.save_pretrained(str(path))
