"""HPSv2 (tgxs002/HPSv2, PyPI hpsv2 1.2.0) on plain open_clip, batched.

The reference (`hpsv2.img_score.score`, `hpsv2.evaluation`) builds open_clip ViT-H-14, loads
`torch.load(cp)['state_dict']` of the HPS checkpoint (`HPS_v2_compressed.pt` for v2.0,
`HPS_v2.1_compressed.pt` for v2.1, hub xswu/HPSv2; `hpsv2.utils.hps_version_map`) strictly into
it, preprocesses with `image_transform(image_size, is_train=False, resize_longest_max=True)`
(hpsv2/src/open_clip/transform.py): RGB → ToTensor → `ResizeMaxSize` (bicubic
`torchvision.transforms.functional.resize` of the tensor so the longest side is 224, new size
`round(side * 224 / longest)`, zero pad split floor-left/top) → Normalize(CLIP mean/std), tokenises
with open_clip's tokenizer (context 77) and takes `image_features @ text_features.T` of the
L2-normalised features: a cosine (its benchmark prints 100·cos; `scale` in the card says which
one the records hold).

`ResizeMaxSize` calls `F.resize` without `antialias`; on a tensor that meant no antialiasing in
the torchvision of hpsv2 1.2.0's time (< 0.17: default `None`/"warn" → False for tensors), and
antialiasing from 0.17 on. The published benchmark numbers predate 0.17, so the card pins
`antialias: false` and the value is part of the fingerprint; change it only knowingly.

Weights: the checkpoint is a pickle. It is resolved here (not through `models.resolve_model`,
which requires .safetensors) — `assets.resolve_hub_snapshot(repo, revision,
allow_patterns=[file])` for hub ids, or a local folder holding `file`, or the file itself — and
read only with `torch.load(weights_only=True)`; a pickle that needs anything beyond tensors and
plain containers is refused with one line. The file's sha256 is in the fingerprint.

Deviations from the reference, deliberate: float32 instead of CUDA autocast fp16 (the reference
uses `precision='amp'`), many images per forward instead of one, the checkpoint loaded once (its
`score()` reloads it on every call), and an image whose longest side already equals the model
size but is not square is still padded to a square (the reference skips resize and pad when
the scale is exactly 1 and then cannot run such an image at all).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_file
from evalkit.metrics.api import ImageItem, MetricInfo, Ratio, Record, mean_value_aggregate, mean_value_ratios
from evalkit.metrics.cards import MetricCard
from evalkit.metrics.context import MetricContext
from evalkit.metrics.preprocess import CLIP_MEAN, CLIP_STD
from evalkit.metrics.registry import BUILTINS
from evalkit.results.recordview import COSINE_VIEW, RecordView
from evalkit.runtime.assets import resolve_hub_snapshot

if TYPE_CHECKING:
    from open_clip.model import CLIP  # untyped: Any to the type checker

VERSION = "1"
ROLE = "hps"
HPS_VERSIONS = {"v2.0": "HPS_v2_compressed.pt", "v2.1": "HPS_v2.1_compressed.pt"}  # hpsv2.utils.hps_version_map
SCALES = {"cosine": 1.0, "percent": 100.0}  # records hold scale·cos; the HPSv2 benchmark prints 100·cos


class HPSv2:
    def __init__(self, card: MetricCard, context: MetricContext) -> None:
        del context  # reads no run-time inputs (its registry row declares none)
        self.card = card
        params = BUILTINS["hpsv2"].values(card)
        self.hps_version: str = params["version"]
        if self.hps_version not in HPS_VERSIONS:
            raise EvalkitError(f"metric card {card.name!r}: unknown HPS version {self.hps_version!r}",
                               f"use one of {sorted(HPS_VERSIONS)} (they are not comparable)")
        self.file: str = params["file"] if params["file"] is not None else HPS_VERSIONS[self.hps_version]
        self.antialias: bool = params["antialias"]
        self.scale: str = params["scale"]
        if self.scale not in SCALES:
            raise EvalkitError(f"metric card {card.name!r}: unknown scale {self.scale!r}", f"use one of {list(SCALES)}")
        self.architecture: str | dict[str, Any] = params["architecture"]
        self.record_view = RecordView() if self.scale == "cosine" else COSINE_VIEW
        self.info = MetricInfo(name=card.name, display_name=card.display_name or f"HPS {self.hps_version}",
                               version=VERSION, higher_is_better=card.higher_is_better, prompt_set=card.prompt_set,
                               description=card.description)
        self._checkpoint: Path | None = None
        self._weights_hash: str | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._image_size = 0
        self._device = torch.device("cpu")

    # --- files and fingerprint ---------------------------------------------------------------------------

    def checkpoint_path(self) -> Path:
        if self._checkpoint is None:
            self._checkpoint = resolve_checkpoint(self.card, self.file)
        return self._checkpoint

    def fingerprint(self) -> str:
        if self._weights_hash is None:
            self._weights_hash = sha256_file(self.checkpoint_path())
        return self.card.metric_fingerprint(VERSION, hps_version=self.hps_version, antialias=self.antialias,
                                            scale=self.scale, weights=self._weights_hash)

    def models_used(self) -> dict[str, dict[str, str]]:
        self.fingerprint()  # hashes the checkpoint once
        return {"hps": {"source": str(self.checkpoint_path()), "revision": self.hps_version,
                        "fingerprint": str(self._weights_hash)}}

    # --- the plugin contract -----------------------------------------------------------------------------

    def setup(self, device: torch.device) -> None:
        if self._model is not None and self._device == device:
            return
        if self._model is None:
            model = build_open_clip(self.architecture)
            load_hps_state_dict(model, self.checkpoint_path())
            self._model = model.eval()
            self._tokenizer = make_tokenizer(self.architecture)
            self._image_size = model_image_size(model)
        self._model = self._model.to(device)
        self._device = device

    def prepare(self, item: ImageItem, image: Image.Image) -> dict[str, torch.Tensor]:
        if self._tokenizer is None:
            raise RuntimeError("HPSv2.setup() must run before prepare()")
        return {"pixel_values": hps_transform(image, self._image_size, self.antialias),
                "input_ids": self._tokenizer([item.prompt.text])[0]}

    def score_batch(self, items: Sequence[ImageItem],
                    prepared: Sequence[dict[str, torch.Tensor]]) -> list[list[Record]]:
        if self._model is None:
            raise RuntimeError("HPSv2.setup() must run before score_batch()")
        pixels = torch.stack([p["pixel_values"] for p in prepared]).to(self._device)
        ids = torch.stack([p["input_ids"] for p in prepared]).to(self._device)
        with torch.inference_mode():
            image = self._model.encode_image(pixels, normalize=True).float()
            text = self._model.encode_text(ids, normalize=True).float()
        cosine = (image * text).sum(dim=-1).cpu().tolist()
        factor = SCALES[self.scale]
        return [[{"value": factor * c, "cosine": c}] for c in cosine]

    def prompt_ratios(self, groups: Sequence[Sequence[Record]]) -> dict[str, Ratio]:
        return mean_value_ratios(groups)

    def aggregate(self, records: Sequence[Record]) -> dict[str, Any]:
        return mean_value_aggregate(records, scale=self.scale, hps_version=self.hps_version)


# --- preprocessing ------------------------------------------------------------------------------------------

def hps_transform(image: Image.Image, size: int, antialias: bool) -> torch.Tensor:
    """hpsv2 image_transform(is_train=False, resize_longest_max=True) with the tensor resize's antialias pinned."""
    import torchvision.transforms.functional as F

    if image.mode != "RGB":  # the reference keeps RGBA (its MaskAwareNormalize); generated PNGs are RGB
        image = image.convert("RGB")
    tensor = F.to_tensor(image)
    height, width = tensor.shape[1:]
    scale = size / float(max(height, width))
    if scale != 1.0:
        new_size = [round(height * scale), round(width * scale)]
        tensor = F.resize(tensor, new_size, F.InterpolationMode.BICUBIC, antialias=antialias)
        height, width = new_size
    pad_h, pad_w = size - height, size - width
    if pad_h or pad_w:
        tensor = F.pad(tensor, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    return F.normalize(tensor, CLIP_MEAN, CLIP_STD)


# --- model --------------------------------------------------------------------------------------------------

def model_config(architecture: str | dict[str, Any]) -> dict[str, Any]:
    """An open_clip model config: a registered name (e.g. ViT-H-14) or the config dict itself."""
    import open_clip

    if isinstance(architecture, dict):
        return architecture
    config = open_clip.get_model_config(str(architecture))
    if config is None:
        raise EvalkitError(f"open_clip has no model config {architecture!r}",
                           "name an open_clip architecture (ViT-H-14 for HPSv2) or give its config dict")
    return config


def build_open_clip(architecture: str | dict[str, Any]) -> CLIP:
    """A plain open_clip CLIP (random init, float32) — what the HPS checkpoint loads into."""
    from open_clip.model import CLIP

    config = dict(model_config(architecture))
    if config.get("custom_text") or "hf_model_name" in config.get("text_cfg", {}):
        raise EvalkitError(f"architecture {architecture!r} is not a plain open_clip CLIP",
                           "HPSv2 checkpoints are ViT-H-14 CLIP state dicts")
    config.pop("custom_text", None)
    return CLIP(**config)


def make_tokenizer(architecture: str | dict[str, Any]) -> Any:
    import open_clip

    if isinstance(architecture, str):
        return open_clip.get_tokenizer(architecture)
    return open_clip.tokenizer.SimpleTokenizer(context_length=int(architecture["text_cfg"].get("context_length", 77)))


def model_image_size(model: CLIP) -> int:
    size = model.visual.image_size
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    if size[0] != size[1]:
        raise EvalkitError(f"HPSv2 expects a square model input, got {size}", "use a square open_clip config")
    return int(size[0])


def read_hps_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """`checkpoint['state_dict']` (or a bare state dict), read with weights_only=True only."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EvalkitError(f"HPS checkpoint {path} cannot be read with torch.load(weights_only=True) ({first})",
                           "evalkit never unpickles arbitrary objects; use the official HPS_v2*_compressed.pt "
                           "or re-save its state_dict as plain tensors") from e
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EvalkitError(f"HPS checkpoint {path} holds no state_dict of tensors",
                           "expected {'state_dict': {name: tensor}} as in xswu/HPSv2")
    return state


def load_hps_state_dict(model: torch.nn.Module, path: Path) -> None:
    """Strict load; tensors are copied into the float32 parameters as the reference's load_state_dict does."""
    state = read_hps_state_dict(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise EvalkitError(f"HPS checkpoint {path} does not fit the open_clip model "
                           f"({str(e).splitlines()[0]}; {len(state)} keys)",
                           "check params.architecture in the metric card (ViT-H-14 for HPSv2)") from e


def resolve_checkpoint(card: MetricCard, file: str) -> Path:
    """The checkpoint file: a local file, a local folder holding `file`, or `file` of a hub snapshot."""
    ref = card.model(ROLE)
    path = Path(ref.source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        folder, where = path, str(path)
    elif path.is_absolute() or ref.source.startswith("."):
        raise EvalkitError(f"{ROLE} checkpoint {ref.source} does not exist", "fix the path in the metric card")
    else:
        folder = resolve_hub_snapshot(ref.source, ref.revision, allow_patterns=[file])
        where = f"{ref.source}@{ref.revision}"
    checkpoint = folder / file
    if not checkpoint.is_file():
        raise EvalkitError(f"{where} has no {file}",
                           f"fetch it with `hf download {ref.source} {file} --revision {ref.revision}`")
    return checkpoint
