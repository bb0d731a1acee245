"""Tiny random-weight transformer (DiT) pipelines: PixArt-alpha- and SD3-shaped.

Like `evalkit.tiny.sd`, these exist so the demo and the tests run the real diffusers code
path for transformer checkpoints (T5 conditioning with attention masks, learned sigma,
joint-attention MMDiT, flow matching) with no downloads. Every component is built from a
config written here; weights are random but seeded, so every build is identical.

The one piece that normally comes from the Hub is PixArt's T5 sentencepiece tokenizer.
`tiny_t5_tokenizer` builds an equivalent Unigram tokenizer in memory with the `tokenizers`
library (what transformers' fast T5 tokenizer wraps), so no `sentencepiece` dependency.
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import torch

# Classes from their defining modules: for a type checker, diffusers' top-level names are its
# torch-less placeholder classes.
from diffusers.models import AutoencoderKL, PixArtTransformer2DModel, SD3Transformer2DModel
from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import PixArtAlphaPipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import StableDiffusion3Pipeline
from diffusers.schedulers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import Unigram
from transformers import (
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from evalkit.generation.tokenizer import write_clip_tokenizer
from evalkit.tiny.sd import text_config, tiny_vae

T5_DIM = 32
CLIP_DIM = 32
PIXART_MAX_SEQUENCE_LENGTH = 120
"""PixArt-alpha's T5 context length; the pipeline's `max_sequence_length` default."""
SD3_MAX_SEQUENCE_LENGTH = 256
"""SD3's default T5 context length (zeros when there is no T5)."""

# Whole-word pieces so common prompt words are one token, as with a trained sentencepiece
# model; everything else falls back to per-character pieces, so no prompt is all-unknown.
# fmt: off
_T5_WORDS: tuple[str, ...] = (
    "a", "an", "the", "of", "in", "on", "at", "with", "and", "or", "to", "from", "by", "for", "is",
    "are", "photo", "picture", "image", "painting", "drawing", "portrait", "close", "up", "red",
    "green", "blue", "yellow", "black", "white", "orange", "purple", "pink", "brown", "gray", "one",
    "two", "three", "four", "five", "cat", "dog", "bird", "horse", "car", "bus", "tree", "flower",
    "house", "person", "man", "woman", "child", "table", "chair", "cup", "apple", "banana", "sky",
    "water", "street", "city",
)
# fmt: on


def _t5_vocab() -> list[tuple[str, float]]:
    """(piece, log-prob) pairs in T5's layout: <pad>=0, </s>=1, <unk>=2, then pieces.

    Scores play the role of sentencepiece's unigram log-probabilities: Viterbi picks the
    segmentation with the highest total, so whole words beat spelling them out.
    """
    chars = [c for c in string.printable if not c.isspace()]
    chars += [chr(c) for c in range(0xA1, 0x100) if c != 0xAD]  # Latin-1: é, ü, ß, ...
    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    vocab += [("▁" + w, -4.0 - 0.01 * i) for i, w in enumerate(_T5_WORDS)]
    vocab += [("▁" + c, -8.0) for c in chars if c not in _T5_WORDS]  # "a" is both
    vocab += [(c, -9.0) for c in chars]
    return vocab


def tiny_t5_tokenizer(model_max_length: int = PIXART_MAX_SEQUENCE_LENGTH) -> T5Tokenizer:
    """A T5 tokenizer (Unigram + Metaspace, appends </s>, pads with <pad>) built offline.

    The `tokenizers` pipeline is the one transformers builds for T5 from a sentencepiece
    model, assembled here from (piece, score) pairs, so neither a `spiece.model` file nor the
    `sentencepiece` package is needed. It is wrapped via `tokenizer_object` in transformers 5's
    tokenizers-backed `T5Tokenizer` (which `T5TokenizerFast` aliases). It saves as
    `tokenizer.json` + `tokenizer_config.json`.
    `extra_ids=0`: the 100 `<extra_id_N>` sentinels are for span corruption, which a text
    encoder for diffusion never uses.
    """
    backend = Tokenizer(Unigram(_t5_vocab(), unk_id=2, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)]
    )
    return T5Tokenizer(
        tokenizer_object=backend,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=model_max_length,
    )


def tiny_t5_encoder(vocab_size: int, d_model: int = T5_DIM) -> T5EncoderModel:
    """A 2-layer T5 v1.1-style (gated-gelu) encoder, as PixArt uses t5-v1_1-xxl."""
    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=d_model * 2,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )  # type: ignore[call-arg]  # T5Config takes these base-config keywords; its typed signature omits them
    return T5EncoderModel(config)


def _pixart_scheduler() -> DPMSolverMultistepScheduler:
    """PixArt-alpha's released scheduler config (linear betas, epsilon, DPM-Solver++ 2M)."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type="epsilon",
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        timestep_spacing="linspace",
        steps_offset=0,
    )


def _check_resolution(resolution: int, multiple: int) -> None:
    if resolution <= 0 or resolution % multiple:
        raise ValueError(f"resolution must be a positive multiple of {multiple}, got {resolution}")


def _vae_scale_factor(vae: AutoencoderKL) -> int:
    """The factor the pipelines derive from the VAE; the DiT's sample_size is in latents."""
    return 2 ** (len(vae.config["block_out_channels"]) - 1)


def build_tiny_pixart(seed: int = 0, resolution: int = 32) -> PixArtAlphaPipeline:
    """A PixArt-alpha-shaped pipeline: DiT with learned sigma + VAE (factor 2) + T5 encoder.

    `transformer.config.sample_size = resolution // 2`, so the default call produces
    `resolution`-pixel images. That sample size is not one of PixArt's aspect-ratio bins
    (32/64/128), so calls must pass `use_resolution_binning=False`.
    """
    _check_resolution(resolution, 8)  # the pipeline rejects sizes that are not multiples of 8
    torch.manual_seed(seed)
    vae = tiny_vae(resolution)
    tokenizer = tiny_t5_tokenizer()
    text_encoder = tiny_t5_encoder(len(tokenizer))
    heads, head_dim = 2, 16
    transformer = PixArtTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=vae.config["latent_channels"],
        out_channels=2 * vae.config["latent_channels"],  # learned sigma, as in PixArt-alpha
        num_layers=2,
        cross_attention_dim=heads * head_dim,
        caption_channels=text_encoder.config.d_model,
        sample_size=resolution // _vae_scale_factor(vae),
        patch_size=2,
        norm_type="ada_norm_single",
        num_embeds_ada_norm=1000,
        use_additional_conditions=False,
    )
    return PixArtAlphaPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=_pixart_scheduler(),
    )


def sd3_vae(sample_size: int = 32) -> AutoencoderKL:
    """SD3's VAE layout (16 latent channels, shift/scale factors, no quant convs), tiny."""
    return tiny_vae(
        sample_size,
        latent_channels=16,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def _clip_with_projection(dim: int = CLIP_DIM) -> CLIPTextModelWithProjection:
    return CLIPTextModelWithProjection(text_config(dim, dim))


def _clip_tokenizer() -> CLIPTokenizer:
    """Load the local byte-level CLIP tokenizer; it lives in memory once loaded."""
    with tempfile.TemporaryDirectory(prefix="evalkit-tok-") as tmp:
        return CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(Path(tmp))))


def build_tiny_sd3(seed: int = 0, resolution: int = 32, with_t5: bool = False) -> StableDiffusion3Pipeline:
    """An SD3-shaped pipeline: MMDiT + 16-channel VAE + two CLIP encoders (+ optional T5).

    By default `text_encoder_3`/`tokenizer_3` are None, which the pipeline supports by feeding
    zeros of width `joint_attention_dim` for the T5 part of the context. Such a folder only
    reloads with `from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)`: diffusers
    does not treat them as optional components. `with_t5=True` adds a tiny T5 encoder and
    tokenizer instead, so a plain `from_pretrained(folder)` works, as with the released model.
    `joint_attention_dim` is twice the concatenated CLIP width, so the CLIP embeddings get
    zero-padded to it as the real 2048-wide CLIP context is padded to T5's 4096.
    """
    _check_resolution(resolution, 8)
    torch.manual_seed(seed)
    vae = sd3_vae(resolution)
    text_encoder = _clip_with_projection()
    text_encoder_2 = _clip_with_projection()
    heads, head_dim, patch = 2, 16, 2
    sample_size = resolution // _vae_scale_factor(vae)
    joint_dim = 4 * CLIP_DIM
    transformer = SD3Transformer2DModel(
        sample_size=sample_size,
        patch_size=patch,
        in_channels=vae.config["latent_channels"],
        out_channels=vae.config["latent_channels"],
        num_layers=2,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=joint_dim,
        caption_projection_dim=heads * head_dim,
        pooled_projection_dim=2 * CLIP_DIM,
        pos_embed_max_size=3 * sample_size // patch,  # SD3: 192 for a 64-patch grid
    )
    tokenizer_3: T5Tokenizer | None = None
    text_encoder_3: T5EncoderModel | None = None
    if with_t5:
        tokenizer_3 = tiny_t5_tokenizer(model_max_length=SD3_MAX_SEQUENCE_LENGTH)
        text_encoder_3 = tiny_t5_encoder(len(tokenizer_3), d_model=joint_dim)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=_clip_tokenizer(),
        text_encoder_3=text_encoder_3,  # type: ignore[arg-type]  # optional in the pipeline, typed as required
        tokenizer_3=tokenizer_3,
    )


def pixart_latent_shape(pipe: PixArtAlphaPipeline, batch: int, resolution: int) -> tuple[int, ...]:
    """Initial-noise shape `PixArtAlphaPipeline(latents=...)` expects for square images."""
    side = resolution // pipe.vae_scale_factor
    return (batch, pipe.transformer.config.in_channels, side, side)


def sd3_latent_shape(pipe: StableDiffusion3Pipeline, batch: int, resolution: int) -> tuple[int, ...]:
    """Initial-noise shape `StableDiffusion3Pipeline(latents=...)` expects for square images."""
    side = resolution // pipe.vae_scale_factor
    return (batch, pipe.transformer.config.in_channels, side, side)
