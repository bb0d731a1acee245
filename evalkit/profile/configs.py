"""Public component configs of SD 1.5, SD 2.x-base and SDXL-base, written in code.

These are the values of the released `config.json` files (UNet, VAE, CLIP text encoders,
SD 1.5's safety checker), so `evalkit profile --preset sd2` needs no download and a
researcher can size a variant by editing one dict. Only architecture fields are kept:
fields that change neither shapes nor compute (dropout, init ranges, dtype) are left at the
library defaults. The parameter counts these give are pinned in tests/test_profile.py against
the released models' counts (e.g. SD 2.x UNet 865,910,724).

`study-sdxl` and `study-sdxl-c128` are the UNets of the scaling study's Table 1 (Li et al.,
CVPR 2024) as far as the paper's numbers pin them down: the SDXL UNet layout with a
1024-wide context (the study trained every UNet on SD 2.x's OpenCLIP-H text encoder) and
without SDXL's size/crop micro-conditioning; C128 has base width 128 instead of 320. With
those two changes the released SDXL layout lands exactly on the table's 2.39B/0.42B
parameters and 198/35 GMACs; the study's actual training configs are not public.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from evalkit.errors import EvalkitError

DENOISER, TEXT_ENCODER, VAE, OTHER = "denoiser", "text_encoder", "vae", "other"


@dataclass(frozen=True)
class ComponentSpec:
    """One module of a pipeline: where its class lives and the config it is built from."""

    name: str  # attribute in the pipeline: unet, transformer, vae, text_encoder_2, ...
    library: str  # "diffusers", "transformers", or a diffusers pipeline module (stable_diffusion)
    class_name: str
    config: dict[str, Any]
    role: str  # DENOISER, TEXT_ENCODER, VAE or OTHER
    note: str = ""  # e.g. "not run: evalkit removes the safety checker"


@dataclass(frozen=True)
class PipelineSpec:
    """Everything profiling needs from a pipeline, without weights."""

    name: str
    pipeline_class: str  # "" for a bare denoiser config
    family: str  # adapters family: sd, sdxl, pixart, sd3
    components: tuple[ComponentSpec, ...]
    source: dict[str, Any] = field(default_factory=dict)  # where the configs came from (recorded)

    def component(self, role: str) -> ComponentSpec | None:
        return next((c for c in self.components if c.role == role), None)

    def text_encoders(self) -> list[ComponentSpec]:
        return [c for c in self.components if c.role == TEXT_ENCODER]


# -- UNets ---------------------------------------------------------------------------------------
_SD_UNET_COMMON: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

SD15_UNET: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    **_SD_UNET_COMMON,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
}
"""stable-diffusion-v1-5/stable-diffusion-v1-5 unet/config.json (859,520,964 parameters)."""

SD2_UNET: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    **_SD_UNET_COMMON,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "dual_cross_attention": False,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "use_linear_projection": True,
}
"""stabilityai/stable-diffusion-2-base (and 2-1-base) unet/config.json (865,910,724 parameters).
The 768-px SD 2.x models differ only in sample_size (96)."""

SDXL_UNET: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 2048,
    "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 128,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None,
    "use_linear_projection": True,
}
"""stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (2,567,463,684 parameters)."""


def _study_sdxl_unet(base_width: int) -> dict[str, Any]:
    """The SDXL UNet layout as the scaling study ran it: 1024-wide context (OpenCLIP-H),
    no micro-conditioning, base width `base_width` (320 = SDXL's own)."""
    config = copy.deepcopy(SDXL_UNET)
    for key in ("addition_embed_type", "addition_embed_type_num_heads", "addition_time_embed_dim",
                "projection_class_embeddings_input_dim"):
        config.pop(key)
    config["cross_attention_dim"] = 1024
    config["sample_size"] = 32  # the study trained at 256 px
    config["block_out_channels"] = [base_width, 2 * base_width, 4 * base_width]
    config["attention_head_dim"] = [base_width // 64, 2 * base_width // 64, 4 * base_width // 64]  # 64-wide heads
    return config


# -- VAEs --------------------------------------------------------------------------------------
SD_VAE: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
"""SD 1.5 / SD 2.x-base vae/config.json (83,653,863 parameters)."""

SDXL_VAE: dict[str, Any] = {**SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}
"""SDXL-base vae/config.json: the SD layout, retrained; only scale and size differ."""

# -- Text encoders -------------------------------------------------------------------------------
CLIP_VOCAB = 49408

CLIP_L_TEXT: dict[str, Any] = {
    "vocab_size": CLIP_VOCAB,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05,
    "projection_dim": 768,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
"""openai/clip-vit-large-patch14's text tower: SD 1.5 text_encoder, SDXL text_encoder (123,060,480)."""

OPENCLIP_H_TEXT: dict[str, Any] = {
    **CLIP_L_TEXT,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 23,  # SD 2.x drops the last of OpenCLIP-H's 24 layers (penultimate features)
    "hidden_act": "gelu",
    "projection_dim": 512,
}
"""OpenCLIP ViT-H/14 text tower as SD 2.x ships it (340,387,840 parameters)."""

OPENCLIP_BIGG_TEXT: dict[str, Any] = {
    **CLIP_L_TEXT,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}
"""OpenCLIP ViT-bigG/14 text tower with projection: SDXL text_encoder_2 (694,659,840 parameters)."""

SD15_SAFETY_CHECKER: dict[str, Any] = {
    "projection_dim": 768,
    "text_config": {**CLIP_L_TEXT},
    "vision_config": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "image_size": 224,
        "hidden_act": "quick_gelu",
        "projection_dim": 768,
    },
}
"""SD 1.5 safety_checker/config.json (a CLIP ViT-L/14 vision tower + concept embeddings)."""


def _unet(config: dict[str, Any]) -> ComponentSpec:
    return ComponentSpec("unet", "diffusers", "UNet2DConditionModel", copy.deepcopy(config), DENOISER)


def _vae(config: dict[str, Any]) -> ComponentSpec:
    return ComponentSpec("vae", "diffusers", "AutoencoderKL", copy.deepcopy(config), VAE)


def _text(name: str, class_name: str, config: dict[str, Any]) -> ComponentSpec:
    return ComponentSpec(name, "transformers", class_name, copy.deepcopy(config), TEXT_ENCODER)


def _sd15() -> PipelineSpec:
    checker = ComponentSpec("safety_checker", "stable_diffusion", "StableDiffusionSafetyChecker",
                            copy.deepcopy(SD15_SAFETY_CHECKER), OTHER,
                            note="not run: evalkit removes the safety checker")
    return PipelineSpec("sd1.5", "StableDiffusionPipeline", "sd",
                        (_unet(SD15_UNET), _text("text_encoder", "CLIPTextModel", CLIP_L_TEXT), _vae(SD_VAE), checker),
                        {"kind": "preset", "preset": "sd1.5", "mirrors": "stable-diffusion-v1-5/stable-diffusion-v1-5"})


def _sd2() -> PipelineSpec:
    return PipelineSpec("sd2", "StableDiffusionPipeline", "sd",
                        (_unet(SD2_UNET), _text("text_encoder", "CLIPTextModel", OPENCLIP_H_TEXT), _vae(SD_VAE)),
                        {"kind": "preset", "preset": "sd2", "mirrors": "stabilityai/stable-diffusion-2-1-base"})


def _sdxl() -> PipelineSpec:
    return PipelineSpec("sdxl", "StableDiffusionXLPipeline", "sdxl",
                        (_unet(SDXL_UNET), _text("text_encoder", "CLIPTextModel", CLIP_L_TEXT),
                         _text("text_encoder_2", "CLIPTextModelWithProjection", OPENCLIP_BIGG_TEXT), _vae(SDXL_VAE)),
                        {"kind": "preset", "preset": "sdxl", "mirrors": "stabilityai/stable-diffusion-xl-base-1.0"})


def _study(name: str, base_width: int) -> PipelineSpec:
    return PipelineSpec(name, "StableDiffusionPipeline", "sd",
                        (_unet(_study_sdxl_unet(base_width)), _text("text_encoder", "CLIPTextModel", OPENCLIP_H_TEXT),
                         _vae(SD_VAE)),
                        {"kind": "preset", "preset": name,
                         "mirrors": "scaling study Table 1 (inferred: SDXL layout, 1024-wide context, no micro-cond.)"})


PRESETS: dict[str, Any] = {
    "sd1.5": _sd15,
    "sd2": _sd2,
    "sdxl": _sdxl,
    "study-sdxl": lambda: _study("study-sdxl", 320),
    "study-sdxl-c128": lambda: _study("study-sdxl-c128", 128),
}
ALIASES = {"sd15": "sd1.5", "sd1": "sd1.5", "sd2.1": "sd2", "sd2-base": "sd2", "sdxl-base": "sdxl"}


def preset(name: str) -> PipelineSpec:
    """A fresh spec (configs are deep copies, so callers may edit them)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in PRESETS:
        raise EvalkitError(f"unknown preset {name!r}", f"choose one of: {', '.join(PRESETS)}")
    return PRESETS[key]()
