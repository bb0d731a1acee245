"""What differs between pipeline families: how prompts are encoded and passed back in.

Prompt embeddings are computed by the pipeline's own `encode_prompt` (so tokenisation,
padding and pooling are exactly the pipeline's) and handed back through the pipeline's
documented `prompt_embeds`-style arguments. Everything else in a call is common.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from evalkit.errors import EvalkitError

if TYPE_CHECKING:
    from diffusers.models import ModelMixin


@dataclass(frozen=True)
class Adapter:
    family: str
    pipeline_classes: tuple[str, ...]
    denoiser: str  # attribute holding the denoiser: "unet" or "transformer"
    outputs: tuple[str, ...]  # names of encode_prompt's return values, in order
    positive: tuple[str, ...]  # call kwargs that carry the prompt
    negative: tuple[str, ...]  # call kwargs that carry the negative prompt (same order)
    encode_extra: dict[str, Any] = field(default_factory=dict)
    call_extra: dict[str, Any] = field(default_factory=dict)
    uses_eta: bool = True

    def encode(self, pipe: Any, texts: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        """Positive embeddings for `texts`, one row per text."""
        out = self._encode(pipe, texts, device, guidance=False, negative="")
        return {name: out[name] for name in self.positive}

    def encode_negative(self, pipe: Any, negative: str, device: torch.device) -> dict[str, torch.Tensor]:
        """The unconditional embeddings the pipeline itself would use for `negative`
        (including SDXL's zeroed embeddings for an empty negative prompt)."""
        out = self._encode(pipe, [negative], device, guidance=True, negative=negative)
        return {name: out["negative_" + name] for name in self.positive}

    def _encode(self, pipe: Any, texts: list[str], device: torch.device, *, guidance: bool,
                negative: str) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            values = pipe.encode_prompt(
                prompt=texts,
                device=device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=guidance,
                negative_prompt=[negative] * len(texts) if guidance else None,
                **self.encode_extra,
            )
        return dict(zip(self.outputs, values, strict=True))

    def call_kwargs(self, positive: dict[str, torch.Tensor], negative: dict[str, torch.Tensor]) -> dict[str, Any]:
        batch = next(iter(positive.values())).shape[0]
        kwargs: dict[str, Any] = dict(positive)
        for pos_name, neg_name in zip(self.positive, self.negative, strict=True):
            row = negative[pos_name]
            kwargs[neg_name] = row.expand(batch, *row.shape[1:])
        kwargs.update(self.call_extra)
        return kwargs


ADAPTERS: tuple[Adapter, ...] = (
    Adapter(
        family="sd",
        pipeline_classes=("StableDiffusionPipeline",),
        denoiser="unet",
        outputs=("prompt_embeds", "negative_prompt_embeds"),
        positive=("prompt_embeds",),
        negative=("negative_prompt_embeds",),
    ),
    Adapter(
        family="sdxl",
        pipeline_classes=("StableDiffusionXLPipeline",),
        denoiser="unet",
        outputs=("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                 "negative_pooled_prompt_embeds"),
        positive=("prompt_embeds", "pooled_prompt_embeds"),
        negative=("negative_prompt_embeds", "negative_pooled_prompt_embeds"),
    ),
    Adapter(
        family="pixart",
        pipeline_classes=("PixArtAlphaPipeline", "PixArtSigmaPipeline"),
        denoiser="transformer",
        outputs=("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds",
                 "negative_prompt_attention_mask"),
        positive=("prompt_embeds", "prompt_attention_mask"),
        negative=("negative_prompt_embeds", "negative_prompt_attention_mask"),
        # Caption cleaning needs bs4+ftfy and silently turns itself off without them;
        # evalkit fixes it off so the text the encoder sees does not depend on extras.
        encode_extra={"clean_caption": False},
        # negative_prompt defaults to "" in the call and then clashes with negative_prompt_embeds.
        call_extra={"use_resolution_binning": False, "clean_caption": False, "negative_prompt": None},
    ),
    Adapter(
        family="sd3",
        pipeline_classes=("StableDiffusion3Pipeline",),
        denoiser="transformer",
        outputs=("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                 "negative_pooled_prompt_embeds"),
        positive=("prompt_embeds", "pooled_prompt_embeds"),
        negative=("negative_prompt_embeds", "negative_pooled_prompt_embeds"),
        encode_extra={"prompt_2": None, "prompt_3": None},
        uses_eta=False,
    ),
)


def adapter_for(pipeline_class: str) -> Adapter:
    for adapter in ADAPTERS:
        if pipeline_class in adapter.pipeline_classes:
            return adapter
    supported = ", ".join(c for a in ADAPTERS for c in a.pipeline_classes)
    raise EvalkitError(f"pipeline class {pipeline_class} is not supported by evalkit",
                       f"supported text-to-image pipelines: {supported}")


def denoiser_of(pipe: Any, adapter: Adapter) -> ModelMixin:
    return getattr(pipe, adapter.denoiser)


def latent_shape(pipe: Any, adapter: Adapter, height: int, width: int) -> tuple[int, int, int]:
    factor = pipe.vae_scale_factor
    channels = denoiser_of(pipe, adapter).config.in_channels
    return (channels, height // factor, width // factor)


def native_resolution(pipe: Any, adapter: Adapter) -> int:
    sample_size = denoiser_of(pipe, adapter).config.sample_size
    if isinstance(sample_size, (list, tuple)):
        sample_size = sample_size[0]
    return int(sample_size) * int(pipe.vae_scale_factor)


def resolution_multiple(pipe: Any, adapter: Adapter) -> int:
    """Sizes must divide into whole latent pixels (and whole patches for transformers)."""
    patch = getattr(denoiser_of(pipe, adapter).config, "patch_size", None) or 1
    return int(pipe.vae_scale_factor) * int(patch)
