"""What a checkpoint costs under the protocol, from its configs alone.

`profile_spec` builds every component on the meta device, counts parameters, and counts the
MACs of one denoiser forward (batch 1), one VAE decode and one text-encoder forward per
resolution; the per-image total is the protocol's work: steps × (2 with CFG, else 1)
denoiser passes + one VAE decode + one forward of each text encoder for the prompt. (The
empty negative prompt is encoded once per run by evalkit and cached, so it is not counted
per image.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from evalkit.errors import EvalkitError
from evalkit.options import DEFAULTS
from evalkit.profile.build import assert_meta, build_component
from evalkit.profile.configs import DENOISER, TEXT_ENCODER, VAE, ComponentSpec, PipelineSpec
from evalkit.profile.macs import MacCount, denoiser_macs, text_encoder_macs, vae_decode_macs
from evalkit.profile.params import ComponentParams, component_params, total_parameters

DEFAULT_VAE_SCALE_FACTOR = 8  # every SD/SDXL/PixArt/SD3 VAE; used when only a denoiser config is given
CLIP_LENGTH = 77
T5_LENGTHS = {"pixart": 120, "PixArtSigmaPipeline": 300, "sd3": 256}  # the pipelines' max_sequence_length
DEFAULT_CONTEXT = {"sd": CLIP_LENGTH, "sdxl": CLIP_LENGTH, "pixart": 120, "sd3": CLIP_LENGTH + 256}


@dataclass(frozen=True)
class ProtocolCost:
    """How many forwards of each component one image takes."""

    steps: int = DEFAULTS.steps
    guidance_scale: float = DEFAULTS.guidance_scale

    @property
    def passes_per_step(self) -> int:
        """CFG runs the denoiser on the conditional and the unconditional input every step."""
        return 2 if self.guidance_scale > 1 else 1

    @property
    def denoiser_passes(self) -> int:
        return self.steps * self.passes_per_step


@dataclass(frozen=True)
class ResolutionCompute:
    resolution: int
    latent_side: int
    denoiser: MacCount
    vae_decode: MacCount | None
    text_encoders: dict[str, MacCount]
    per_image: MacCount

    @property
    def text_encoding(self) -> MacCount:
        return sum(self.text_encoders.values(), MacCount())


@dataclass
class Profile:
    name: str
    pipeline_class: str
    family: str
    source: dict[str, Any]
    dtype: torch.dtype  # for parameter bytes
    components: list[ComponentParams]
    total_parameters: int
    protocol: ProtocolCost
    vae_scale_factor: int
    context_length: int
    text_lengths: dict[str, int]
    compute: list[ResolutionCompute]
    notes: list[str] = field(default_factory=list)
    latency: Any = None  # latency.LatencyReport when measured

    @property
    def denoiser(self) -> ComponentParams:
        return next(c for c in self.components if c.role == DENOISER)


def build_meta(spec: PipelineSpec) -> dict[str, torch.nn.Module]:
    """Every component of `spec` on the meta device: shapes only, no parameter memory."""
    modules = {c.name: build_component(c) for c in spec.components}
    assert_meta(modules)
    return modules


def vae_scale_factor(spec: PipelineSpec, default: int = DEFAULT_VAE_SCALE_FACTOR) -> int:
    vae = spec.component(VAE)
    if vae is None or "block_out_channels" not in vae.config:
        return default
    return 2 ** (len(vae.config["block_out_channels"]) - 1)


def native_resolution(spec: PipelineSpec, default_factor: int = DEFAULT_VAE_SCALE_FACTOR) -> int:
    denoiser = _denoiser(spec)
    size = denoiser.config.get("sample_size") or 64
    if isinstance(size, (list, tuple)):
        size = size[0]
    return int(size) * vae_scale_factor(spec, default_factor)


def resolution_multiple(spec: PipelineSpec, default_factor: int = DEFAULT_VAE_SCALE_FACTOR) -> int:
    """Images must divide into whole latent pixels, and whole patches for transformers."""
    patch = _denoiser(spec).config.get("patch_size") or 1
    return vae_scale_factor(spec, default_factor) * int(patch)


@dataclass(frozen=True)
class DenoiserForward:
    """One denoiser forward at the native resolution, batch 1: what training compute is counted from."""

    macs: int
    class_name: str
    resolution: int


def denoiser_forward(spec: PipelineSpec) -> DenoiserForward:
    """MACs of one denoiser forward (configs only, meta device) at the denoiser's native size."""
    denoiser = _denoiser(spec)
    resolution = native_resolution(spec)
    side = resolution // vae_scale_factor(spec)
    macs = denoiser_macs(build_component(denoiser), spec.family, side, context_length(spec)).total
    return DenoiserForward(macs, denoiser.class_name, resolution)


def text_length(spec: PipelineSpec, component: ComponentSpec) -> int:
    """Tokens one prompt is padded to for this encoder (CLIP: its positions; T5: the pipeline's max)."""
    if "T5" in component.class_name:
        return T5_LENGTHS.get(spec.pipeline_class, T5_LENGTHS.get(spec.family, 120))
    return int(component.config.get("max_position_embeddings") or CLIP_LENGTH)


def context_length(spec: PipelineSpec) -> int:
    """Tokens of text context the denoiser attends to."""
    if spec.family == "pixart":
        return T5_LENGTHS.get(spec.pipeline_class, T5_LENGTHS["pixart"])
    if spec.family == "sd3":
        return CLIP_LENGTH + T5_LENGTHS["sd3"]  # the pipeline pads CLIP to 77 and T5 (or zeros) to 256
    encoders = [c for c in spec.components if c.role == TEXT_ENCODER]
    return text_length(spec, encoders[0]) if encoders else DEFAULT_CONTEXT.get(spec.family, CLIP_LENGTH)


def profile_spec(spec: PipelineSpec, resolutions: Sequence[int] = (), protocol: ProtocolCost | None = None,
                 dtype: torch.dtype = torch.bfloat16, default_vae_factor: int = DEFAULT_VAE_SCALE_FACTOR) -> Profile:
    """Parameters and per-resolution MACs of `spec`, without weights (see module docstring)."""
    protocol = protocol or ProtocolCost()
    if protocol.steps < 1:
        raise EvalkitError(f"--steps must be at least 1 (got {protocol.steps})", "the protocol uses 50")
    resolutions = list(resolutions) or [native_resolution(spec, default_vae_factor)]
    factor = vae_scale_factor(spec, default_vae_factor)
    multiple = resolution_multiple(spec, default_vae_factor)
    for size in resolutions:
        if size <= 0 or size % multiple:
            raise EvalkitError(f"resolution {size} is not a positive multiple of {multiple} for {spec.name}",
                               f"choose a multiple of {multiple} (VAE factor {factor} × patch size)")
    modules = build_meta(spec)
    rows = component_params(modules, spec.components)
    denoiser = _denoiser(spec)
    vae = spec.component(VAE)
    encoders = [c for c in spec.components if c.role == TEXT_ENCODER]
    lengths = {c.name: text_length(spec, c) for c in encoders}
    context = context_length(spec)
    text_cost = {c.name: text_encoder_macs(modules[c.name], lengths[c.name]) for c in encoders}
    compute = []
    for size in resolutions:
        side = size // factor
        step = denoiser_macs(modules[denoiser.name], spec.family, side, context)
        decode = vae_decode_macs(modules[vae.name], side) if vae is not None else None
        per_image = step.times(protocol.denoiser_passes) + (decode or MacCount()) + sum(text_cost.values(), MacCount())
        compute.append(ResolutionCompute(size, side, step, decode, dict(text_cost), per_image))
    assert_meta(modules)  # the forwards must not have materialised anything either
    notes = _notes(spec, vae is not None, bool(encoders), factor)
    return Profile(spec.name, spec.pipeline_class, spec.family, dict(spec.source), dtype, rows,
                   total_parameters(modules), protocol, factor, context, lengths, compute, notes)


def _denoiser(spec: PipelineSpec) -> ComponentSpec:
    denoiser = spec.component(DENOISER)
    if denoiser is None:
        raise EvalkitError(f"{spec.name} has no denoiser (unet or transformer)", "profile a text-to-image pipeline")
    return denoiser


def _notes(spec: PipelineSpec, has_vae: bool, has_text: bool, factor: int) -> list[str]:
    notes = []
    if not has_vae:
        notes.append(f"no VAE given: latents assumed {factor}x smaller than images, decode not counted "
                     "(add --vae-config or --preset)")
    if not has_text:
        notes.append("no text encoder given: text encoding not counted (add --preset or a pipeline)")
    if spec.family == "sd3" and not any(c.name == "text_encoder_3" for c in spec.components):
        notes.append("no T5 encoder: the pipeline feeds zeros for its 256 context tokens (still attended to)")
    return notes
