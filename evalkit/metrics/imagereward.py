"""ImageReward (THUDM/ImageReward, PyPI image-reward 1.5) on transformers' BLIP classes.

The reference (`ImageReward.score`) per image: CLIP-style transform at 224 → BLIP ViT-L/16
image tokens → the "med" BERT text encoder over the prompt (bert-base-uncased + [DEC]/[ENC],
padded to 35 tokens, truncated, first token left as [CLS]) with cross-attention to every image
token and a bidirectional self-attention mask → the [CLS] hidden state → five linear layers →
(x − 0.16717362830052426) / 1.0333394966054072. The reference scores one image per forward;
here a batch of (image, prompt) pairs goes through one forward, always in float32 as the
reference does. The package itself cannot be installed next to evalkit (see ENVIRONMENT.md),
so the weights are converted once by `imagereward_convert.convert_imagereward`, which is also
what makes a hub snapshot holding only the pickled ImageReward.pt a one-line error here.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
from PIL import Image
from torch import nn

from evalkit.errors import EvalkitError
from evalkit.metrics.api import ImageItem, MetricInfo, Ratio, Record, mean_value_aggregate, mean_value_ratios
from evalkit.metrics.cards import MetricCard, ModelRef
from evalkit.metrics.context import MetricContext
from evalkit.metrics.imagereward_convert import (
    HEAD_FILE,
    HEAD_LINEAR_INDICES,
    SPECIAL_TOKENS,
    TEXT_DIR,
    TOKENIZER_DIR,
    VISION_DIR,
)
from evalkit.metrics.models import HUB_PATTERNS, ResolvedModel, resolve_model
from evalkit.metrics.preprocess import CLIP_MEAN, CLIP_STD, center_crop, resize_shorter_side, to_normalized_tensor
from evalkit.metrics.registry import BUILTINS
from evalkit.runtime.assets import resolve_hub_snapshot
from evalkit.runtime.quiet import quiet_loading

if TYPE_CHECKING:
    from transformers import BlipTextModel, BlipVisionModel, PreTrainedModel

M = TypeVar("M", bound="PreTrainedModel")

VERSION = "1"
ROLE = "imagereward"
REWARD_MEAN = 0.16717362830052426  # ImageReward.__init__: self.mean
REWARD_STD = 1.0333394966054072  # ImageReward.__init__: self.std
MAX_LENGTH = 35  # ImageReward.score: tokenizer(..., padding='max_length', truncation=True, max_length=35)
HEAD_DROPOUT = (0.2, 0.2, 0.1)  # MLP: dropout after the first three linear layers (inactive in eval)
REQUIRED_FILES = (f"{VISION_DIR}/config.json", f"{VISION_DIR}/model.safetensors", f"{TEXT_DIR}/config.json",
                  f"{TEXT_DIR}/model.safetensors", HEAD_FILE, f"{TOKENIZER_DIR}/tokenizer_config.json")


class RewardHead(nn.Module):
    """ImageReward.py's MLP with the same Sequential indices, so its state dict keys carry over."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        if len(widths) != len(HEAD_LINEAR_INDICES) + 1:
            raise ValueError(f"the ImageReward head has {len(HEAD_LINEAR_INDICES)} linear layers")
        modules: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            modules.append(nn.Linear(fan_in, fan_out))
            if i < len(HEAD_DROPOUT):
                modules.append(nn.Dropout(HEAD_DROPOUT[i]))
        self.layers = nn.Sequential(*modules)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> RewardHead:
        widths = [int(state[f"layers.{HEAD_LINEAR_INDICES[0]}.weight"].shape[1])]
        widths += [int(state[f"layers.{i}.weight"].shape[0]) for i in HEAD_LINEAR_INDICES]
        head = cls(widths)
        head.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        return head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class ImageRewardModel(nn.Module):
    """BLIP ViT + med BERT + head, batched; `raw` is the head output before normalisation."""

    def __init__(self, vision: BlipVisionModel, text: BlipTextModel, head: RewardHead) -> None:
        super().__init__()
        self.vision, self.text, self.head = vision, text, head

    def raw(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image_embeds = self.vision(pixel_values=pixel_values).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        # is_decoder=False: the reference's BertModel.forward default, i.e. a bidirectional padding
        # mask; the config's is_decoder=True only built the cross-attention layers.
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
                         encoder_attention_mask=image_atts, is_decoder=False)
        return self.head(text.last_hidden_state[:, 0, :].float()).squeeze(-1)

    def rewards(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        return normalise(self.raw(pixel_values, input_ids, attention_mask))


def normalise(raw: torch.Tensor) -> torch.Tensor:
    """The reference's fixed affine map of the head output (its training-set mean and std)."""
    return (raw - REWARD_MEAN) / REWARD_STD


def reference_transform(image: Image.Image, size: int) -> torch.Tensor:
    """ImageReward's _transform: Resize(bicubic) → CenterCrop → RGB → ToTensor → Normalize, in that order.

    Converting to RGB after the crop (not before, as clip_transform does) only matters for
    palette or grey images; evalkit's PNGs are RGB, where both orders give the same numbers.
    """
    return to_normalized_tensor(center_crop(resize_shorter_side(image, size), size), CLIP_MEAN, CLIP_STD)


class ImageReward:
    def __init__(self, card: MetricCard, context: MetricContext) -> None:
        del context  # reads no run-time inputs (its registry row declares none)
        BUILTINS["imagereward"].values(card)  # it takes no params: refuse any
        self.card = card
        self.info = MetricInfo(name=card.name, display_name=card.display_name or "ImageReward", version=VERSION,
                               higher_is_better=card.higher_is_better, prompt_set=card.prompt_set,
                               description=card.description)
        self._model: ImageRewardModel | None = None
        self._tokenizer: Any = None
        self._image_size = 0
        self._device = torch.device("cpu")

    @cached_property
    def files(self) -> ResolvedModel:
        """The weights, resolved on first use (constructing a metric does no I/O)."""
        return resolve_converted(self.card.model(ROLE))

    def fingerprint(self) -> str:
        return self.card.metric_fingerprint(VERSION, weights=self.files.fingerprint)

    def models_used(self) -> dict[str, dict[str, str]]:
        return {ROLE: self.files.record()}

    def setup(self, device: torch.device) -> None:
        if self._model is not None and self._device == device:
            return
        self._model, self._tokenizer = load_converted(self.files.folder, device)
        size = self._model.vision.config.image_size
        if not isinstance(size, int):  # BLIP's config states one side; ImageReward's input is square
            raise EvalkitError(f"ImageReward expects a square BLIP input size, got {size}", "re-run the conversion")
        self._image_size = size
        self._device = device

    def prepare(self, item: ImageItem, image: Image.Image) -> dict[str, torch.Tensor]:
        tokens = self._tokenizer(item.prompt.text, padding="max_length", truncation=True, max_length=MAX_LENGTH,
                                 return_tensors="pt")
        return {"pixel_values": reference_transform(image, self._image_size),
                "input_ids": tokens["input_ids"][0], "attention_mask": tokens["attention_mask"][0]}

    def score_batch(self, items: Sequence[ImageItem],
                    prepared: Sequence[dict[str, torch.Tensor]]) -> list[list[Record]]:
        if self._model is None:
            raise RuntimeError("ImageReward.setup() must run before score_batch()")
        batch = {k: torch.stack([p[k] for p in prepared]).to(self._device) for k in prepared[0]}
        with torch.inference_mode():
            rewards = self._model.rewards(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        return [[{"value": float(r)}] for r in rewards.cpu().tolist()]

    def prompt_ratios(self, groups: Sequence[Sequence[Record]]) -> dict[str, Ratio]:
        return mean_value_ratios(groups)

    def aggregate(self, records: Sequence[Record]) -> dict[str, Any]:
        return mean_value_aggregate(records)


def resolve_converted(ref: ModelRef) -> ResolvedModel:
    """The converted folder (local, or a hub snapshot that holds one), hashed for the fingerprint."""
    path = Path(ref.source).expanduser()
    if path.is_dir():
        check_converted(path, str(path))
        return resolve_model(ref)
    if path.is_absolute() or ref.source.startswith("."):
        raise EvalkitError(f"{ROLE} model folder {ref.source} does not exist", "fix the path in the metric card")
    snapshot = resolve_hub_snapshot(ref.source, ref.revision, allow_patterns=HUB_PATTERNS)
    check_converted(snapshot, f"{ref.source}@{ref.revision}")
    return dataclasses.replace(resolve_model(ModelRef(ref.role, str(snapshot), ref.revision)), ref=ref)


def check_converted(folder: Path, where: str) -> None:
    """One line that says how to get from the official pickle to the folder evalkit loads."""
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not missing:
        return
    pt, med = folder / "ImageReward.pt", folder / "med_config.json"
    convert = (f"python -c \"from evalkit.metrics.imagereward_convert import convert_imagereward as c; "
               f"c('{pt}', '{med}', 'imagereward-converted')\" (reads the pickle with weights_only=True), "
               "then point models.imagereward.source of a copy of metrics/imagereward.yaml at that folder")
    if pt.is_file():
        raise EvalkitError(f"{where} holds the original pickled ImageReward.pt, not evalkit's converted weights",
                           f"convert it once: {convert}")
    raise EvalkitError(f"{where} is not a converted ImageReward folder (missing {', '.join(missing)})",
                       "fetch ImageReward.pt and med_config.json (`hf download THUDM/ImageReward`) and convert "
                       "them with evalkit.metrics.imagereward_convert.convert_imagereward")


def load_converted(folder: Path, device: torch.device) -> tuple[ImageRewardModel, Any]:
    """Strict loads in float32 (the reference copies any stored dtype into float32 parameters)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BlipTextModel, BlipVisionModel

    with quiet_loading():
        vision = _strict(BlipVisionModel, folder / VISION_DIR)
        text = _strict(BlipTextModel, folder / TEXT_DIR, add_pooling_layer=False)
        tokenizer = AutoTokenizer.from_pretrained(str(folder / TOKENIZER_DIR))
    head = RewardHead.from_state_dict(load_file(str(folder / HEAD_FILE)))
    vocab = int(text.config.vocab_size)
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if len(tokenizer) != vocab or ids != [vocab - 2, vocab - 1]:  # transformers 5 may load an empty one offline
        raise EvalkitError(f"the ImageReward tokenizer in {folder / TOKENIZER_DIR} has {len(tokenizer)} tokens "
                           f"([DEC], [ENC] = {ids}), the text encoder {vocab}", "re-run the conversion")
    return ImageRewardModel(vision, text, head).to(device).eval(), tokenizer


def _strict(model_class: type[M], folder: Path, **kwargs: Any) -> M:
    loaded = model_class.from_pretrained(str(folder), dtype=torch.float32, use_safetensors=True,
                                         output_loading_info=True, **kwargs)
    # output_loading_info=True returns (model, info); transformers types the call as the model alone
    model, info = cast(tuple[M, dict[str, list[str]]], loaded)
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise EvalkitError(f"ImageReward weights in {folder} do not fit {model_class.__name__}: {problems}",
                           "re-run the conversion")
    return model
