"""Image preprocessing that reproduces the reference transforms on PIL images.

OpenAI CLIP's transform (used by the CLIP score and, with other sizes, by ImageReward) is
torchvision's Resize(n, bicubic) → CenterCrop(n) → ToTensor → Normalize on a PIL image;
on PIL input torchvision calls PIL's own resize, so doing the same steps with PIL gives the
same numbers without torchvision.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evalkit.errors import EvalkitError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3  # PIL's code, what a processor config's `resample` says


def resize_shorter_side(image: Image.Image, size: int, resample: int = Image.Resampling.BICUBIC) -> Image.Image:
    """torchvision.transforms.Resize(size) semantics: the long side is truncated, not rounded."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return image
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    return image.resize(new_size, resample)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision CenterCrop semantics (offsets rounded half to even via round())."""
    width, height = image.size
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


def center_crop_floor(image: Image.Image, size: int) -> Image.Image:
    """transformers' `image_transforms.center_crop` semantics: offsets floored (torchvision rounds; they
    differ by a pixel when the excess is odd, which a square generated image never has)."""
    width, height = image.size
    top, left = (height - size) // 2, (width - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_normalized_tensor(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    return (tensor - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def clip_transform(image: Image.Image, size: int, mean: Sequence[float] = CLIP_MEAN,
                   std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    return to_normalized_tensor(center_crop(resize_shorter_side(image.convert("RGB"), size), size), mean, std)


def clip_processor_transform(image: Image.Image, shortest_edge: int, crop: int, mean: Sequence[float],
                             std: Sequence[float]) -> torch.Tensor:
    """transformers' slow CLIPImageProcessor (the one reference snippets of 2023 ran): PIL bicubic resize
    of the shorter side (long side truncated, as torchvision), floored centre crop, /255, normalise."""
    resized = resize_shorter_side(image.convert("RGB"), shortest_edge)
    return to_normalized_tensor(center_crop_floor(resized, crop), mean, std)


@dataclass(frozen=True)
class ImageProcessing:
    """What a preprocessor_config.json asks of the slow CLIPImageProcessor (PickScore's, CLIP-FlanT5's)."""

    shortest_edge: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def read(cls, folder: Path) -> ImageProcessing:
        path = folder / "preprocessor_config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
            size, crop = config.get("size", 224), config.get("crop_size", 224)
            processing = cls(int(size["shortest_edge"] if isinstance(size, dict) else size),
                             int(crop["height"] if isinstance(crop, dict) else crop),
                             tuple(float(v) for v in config["image_mean"]),  # type: ignore[arg-type]
                             tuple(float(v) for v in config["image_std"]))  # type: ignore[arg-type]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise EvalkitError(f"{path} is not a CLIP image processor config ({e})",
                               "re-fetch the processor files") from e
        steps = [config.get(k, True) for k in ("do_resize", "do_center_crop", "do_normalize")]
        if not all(steps) or config.get("resample", BICUBIC) != BICUBIC or config.get("do_rescale", True) is not True:
            raise EvalkitError(f"{path} turns off a step (or the bicubic resize) of the processing its metric's "
                               "reference ran", "use the model's own processor files")
        return processing
