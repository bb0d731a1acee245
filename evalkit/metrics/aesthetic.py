"""LAION aesthetic score (christophschuhmann/improved-aesthetic-predictor, "v2"): an MLP on CLIP ViT-L/14 embeddings.

The reference is the authors' `simple_inference.py`: OpenAI CLIP ViT-L/14 (`clip.load`) with its
own preprocess (`clip._transform`: torchvision Resize(224, bicubic) of the shorter side, CenterCrop
with rounded offsets, ToTensor, Normalize), `encode_image`, the embedding L2-normalised in numpy
(`normalized`: a zero norm divides by 1), then `MLP(768)` — Linear 1024, Dropout 0.2, Linear 128,
Dropout 0.2, Linear 64, Dropout 0.1, Linear 16, Linear 1, no activations (the "linearMSE" heads) —
loaded from `sac+logos+ava1-l14-linearMSE.pth` (the one the LAION-Aesthetics sets were filtered with).
Scores are ~1-10 (higher: more aesthetic); 5.5-6.5 is typical of good generations.

Here: transformers' CLIPVisionModelWithProjection from openai/clip-vit-large-patch14 (the same
weights as OpenAI's ViT-L/14, converted by transformers) gives `encode_image`'s embedding; the
preprocess is `preprocess.clip_transform` (torchvision's semantics on PIL, as the reference); the
head is the same module with the same parameter names, read from the .pth with weights_only=True.
Deviations: batches instead of one image, float32 on every device (the reference's `clip.load` on
CUDA runs the vision tower in float16; on CPU it is float32, as here).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_file
from evalkit.metrics.api import ImageItem, MetricInfo, Ratio, Record, mean_value_aggregate, mean_value_ratios
from evalkit.metrics.cards import MetricCard
from evalkit.metrics.clip_vision import load_clip_vision
from evalkit.metrics.context import MetricContext
from evalkit.metrics.models import ResolvedModel, resolve_model
from evalkit.metrics.preprocess import clip_transform
from evalkit.metrics.registry import BUILTINS

VERSION = "1"
HEAD_URL = "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac%2Blogos%2Bava1-l14-linearMSE.pth"


def aesthetic_head(embedding_dim: int) -> nn.Sequential:
    """The reference's MLP `layers`, module for module, so its state dict loads by name."""
    return nn.Sequential(nn.Linear(embedding_dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                         nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))


def read_head(path: Path, embedding_dim: int) -> nn.Sequential:
    """The head from the authors' .pth (`layers.N.*` tensors), or a .safetensors with the same names."""
    require_head(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EvalkitError(f"aesthetic head {path} cannot be read as plain tensors ({first})",
                           "use the authors' sac+logos+ava1-l14-linearMSE.pth") from e
    if not isinstance(state, dict):
        raise EvalkitError(f"aesthetic head {path} holds no state dict", "use the authors' .pth")
    head = aesthetic_head(embedding_dim)
    prefixed = {k.removeprefix("layers."): v for k, v in state.items()}
    try:
        head.load_state_dict(prefixed, strict=True)
    except RuntimeError as e:
        raise EvalkitError(f"aesthetic head {path} does not fit MLP({embedding_dim}) ({str(e).splitlines()[0]})",
                           "use a linearMSE head of the CLIP model the card names (ViT-L/14: 768)") from e
    return head.eval()


def require_head(path: Path) -> Path:
    if not path.is_file():
        raise EvalkitError(f"aesthetic head {path} does not exist",
                           f"download {HEAD_URL} there, or set params.head in the metric card")
    return path


class Aesthetic:
    def __init__(self, card: MetricCard, context: MetricContext) -> None:
        del context  # reads no run-time inputs (its registry row declares none)
        self.card = card
        self.head_path = Path(BUILTINS["aesthetic"].values(card)["head"]).expanduser()
        self.info = MetricInfo(name=card.name, display_name=card.display_name or "LAION aesthetic",
                               version=VERSION, higher_is_better=card.higher_is_better, prompt_set=card.prompt_set,
                               description=card.description)
        self._vision: Any = None
        self._head: nn.Sequential | None = None
        self._image_size = 0
        self._device = torch.device("cpu")

    @cached_property
    def clip(self) -> ResolvedModel:
        return resolve_model(self.card.model("clip"))

    @cached_property
    def head_hash(self) -> str:
        return sha256_file(require_head(self.head_path))

    def fingerprint(self) -> str:
        return self.card.metric_fingerprint(VERSION, clip=self.clip.fingerprint, head=self.head_hash)

    def models_used(self) -> dict[str, dict[str, str]]:
        return {"clip": self.clip.record(),
                "head": {"source": str(self.head_path), "revision": "", "fingerprint": self.head_hash}}

    def setup(self, device: torch.device) -> None:
        if self._vision is not None and self._device == device:
            return
        if self._vision is None:
            self._vision = load_clip_vision(self.clip.folder)
            self._head = read_head(self.head_path, int(self._vision.config.projection_dim))
            self._image_size = int(self._vision.config.image_size)
        assert self._head is not None
        self._vision, self._head = self._vision.to(device), self._head.to(device)
        self._device = device

    def prepare(self, item: ImageItem, image: Image.Image) -> torch.Tensor:
        if not self._image_size:
            raise RuntimeError("Aesthetic.setup() must run before prepare()")
        return clip_transform(image, self._image_size)

    def score_batch(self, items: Sequence[ImageItem], prepared: Sequence[torch.Tensor]) -> list[list[Record]]:
        if self._vision is None or self._head is None:
            raise RuntimeError("Aesthetic.setup() must run before score_batch()")
        with torch.inference_mode():
            embedding = self._vision(pixel_values=torch.stack(list(prepared)).to(self._device)).image_embeds.float()
            norm = torch.linalg.vector_norm(embedding, dim=-1, keepdim=True)
            scores = self._head(embedding / torch.where(norm == 0, torch.ones_like(norm), norm))[:, 0]
        return [[{"value": s}] for s in scores.cpu().tolist()]

    def prompt_ratios(self, groups: Sequence[Sequence[Record]]) -> dict[str, Ratio]:
        return mean_value_ratios(groups)

    def aggregate(self, records: Sequence[Record]) -> dict[str, Any]:
        return mean_value_aggregate(records)
