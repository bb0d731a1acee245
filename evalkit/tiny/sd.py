"""Tiny random-weight UNet pipelines (SD 1.x/2.x- and SDXL-shaped) built from configs.

The demo and the tests run the real diffusers code path on these; only sizes differ from
the public models. Weights are random but seeded, so every build is identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# Classes from their defining modules: for a type checker, diffusers' top-level names are its
# torch-less placeholder classes.
from diffusers.models import AutoencoderKL, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import StableDiffusionXLPipeline
from diffusers.schedulers import DDIMScheduler
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from evalkit.generation.tokenizer import clip_vocab_size, write_clip_tokenizer

TEXT_DIM = 32


def text_config(hidden: int = TEXT_DIM, projection_dim: int = TEXT_DIM) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=clip_vocab_size(),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_attention_heads=2,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=clip_vocab_size() - 2,
        eos_token_id=clip_vocab_size() - 1,
        pad_token_id=clip_vocab_size() - 1,
    )


def _tokenizer(work: Path) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(work)))


def tiny_vae(sample_size: int = 32, latent_channels: int = 4, **config: Any) -> AutoencoderKL:
    """A two-level VAE (scale factor 2); `config` adds family specifics such as SD3's shift."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=sample_size,
        **config,
    )


def tiny_sd_unet(sample_size: int = 16, cross_attention_dim: int = TEXT_DIM) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def _scheduler() -> DDIMScheduler:
    """An SD-like scheduler config (scaled_linear betas), so replacing it is realistic."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def build_tiny_sd(seed: int = 0, resolution: int = 32, work: Path | None = None) -> StableDiffusionPipeline:
    """An SD 1.x-shaped pipeline: UNet + VAE (factor 2) + one CLIP text encoder."""
    torch.manual_seed(seed)
    vae = tiny_vae(resolution)
    unet = tiny_sd_unet(resolution // 2)
    text_encoder = CLIPTextModel(text_config())
    tok_dir = Path(work) if work is not None else None
    tokenizer = _tokenizer(tok_dir or _scratch())
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        # diffusers annotates `scheduler` with KarrasDiffusionSchedulers, an enum of scheduler names,
        # and the safety components as required although requires_safety_checker=False allows None
        scheduler=_scheduler(),  # type: ignore[arg-type]
        safety_checker=None,  # type: ignore[arg-type]
        feature_extractor=None,  # type: ignore[arg-type]
        requires_safety_checker=False,
    )


def build_tiny_sdxl(seed: int = 0, resolution: int = 32) -> StableDiffusionXLPipeline:
    """An SDXL-shaped pipeline: two CLIP encoders, pooled embeds, added time ids."""
    torch.manual_seed(seed)
    vae = tiny_vae(resolution)
    unet = UNet2DConditionModel(
        sample_size=resolution // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM * 2,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=TEXT_DIM + 6 * 8,
        norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(text_config())
    text_encoder_2 = CLIPTextModelWithProjection(text_config())
    scratch = _scratch()
    tokenizer = _tokenizer(scratch / "a")
    tokenizer_2 = _tokenizer(scratch / "b")
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=_scheduler(),  # type: ignore[arg-type]  # typed as KarrasDiffusionSchedulers, an enum of names
        force_zeros_for_empty_prompt=True,
    )


def _scratch() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="evalkit-tok-"))
