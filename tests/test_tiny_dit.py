"""Tiny PixArt-alpha / SD3 pipelines: save, reload offline, generate, embeddings path."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import PixArtAlphaPipeline, StableDiffusion3Pipeline
from transformers import AutoTokenizer

from evalkit.tiny.dit import (
    PIXART_MAX_SEQUENCE_LENGTH,
    build_tiny_pixart,
    build_tiny_sd3,
    pixart_latent_shape,
    sd3_latent_shape,
    tiny_t5_tokenizer,
)

RES = 32
PROMPTS = ["a photo of a cat", "A red Dog on the street, café"]
# PixArt: the tiny sample size is not an aspect-ratio bin; bs4/ftfy are not dependencies, and
# `__call__` defaults clean_caption=True while `encode_prompt` defaults False, so pin it.
PIXART_KW = {"use_resolution_binning": False, "clean_caption": False}
GEN_KW = {"num_inference_steps": 2, "guidance_scale": 7.5, "output_type": "np"}


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _check_images(images: np.ndarray) -> None:
    assert images.shape == (len(PROMPTS), RES, RES, 3)
    assert np.isfinite(images).all()
    assert images.std() > 1e-3
    assert not np.allclose(images[0], images[1])


@pytest.fixture(scope="module")
def pixart(tmp_path_factory: pytest.TempPathFactory) -> PixArtAlphaPipeline:
    folder = tmp_path_factory.mktemp("pixart")
    build_tiny_pixart(seed=0, resolution=RES).save_pretrained(folder)
    return _quiet(PixArtAlphaPipeline.from_pretrained(folder, local_files_only=True))


@pytest.fixture(scope="module")
def sd3(tmp_path_factory: pytest.TempPathFactory) -> StableDiffusion3Pipeline:
    folder = tmp_path_factory.mktemp("sd3")
    build_tiny_sd3(seed=0, resolution=RES).save_pretrained(folder)
    # No T5: diffusers does not treat text_encoder_3/tokenizer_3 as optional on load.
    pipe = StableDiffusion3Pipeline.from_pretrained(
        folder, text_encoder_3=None, tokenizer_3=None, local_files_only=True
    )
    return _quiet(pipe)


def _latents(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(1))


def test_t5_tokenizer_roundtrip(tmp_path: Path) -> None:
    tiny_t5_tokenizer().save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert (tok.pad_token, tok.pad_token_id, tok.eos_token, tok.eos_token_id) == ("<pad>", 0, "</s>", 1)
    enc = tok(PROMPTS, padding="max_length", max_length=PIXART_MAX_SEQUENCE_LENGTH, truncation=True)
    ids = enc.input_ids
    assert all(len(row) == PIXART_MAX_SEQUENCE_LENGTH for row in ids)
    assert ids[0] != ids[1]
    for row, mask in zip(ids, enc.attention_mask, strict=True):
        n = sum(mask)
        assert row[n - 1] == tok.eos_token_id and set(row[n:]) == {tok.pad_token_id}
        assert tok.unk_token_id not in row
    assert tok.tokenize("a photo") == ["▁a", "▁photo"]


def test_builds_are_seeded() -> None:
    a, b, c = build_tiny_pixart(seed=0), build_tiny_pixart(seed=0), build_tiny_pixart(seed=1)
    wa, wb, wc = (p.transformer.pos_embed.proj.weight for p in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_pixart_generates(pixart: PixArtAlphaPipeline) -> None:
    assert pixart.transformer.config.out_channels == 2 * pixart.transformer.config.in_channels
    out = pixart(PROMPTS, generator=torch.Generator().manual_seed(0), **PIXART_KW, **GEN_KW)
    _check_images(out.images)


def test_pixart_rejects_resolution_binning(pixart: PixArtAlphaPipeline) -> None:
    with pytest.raises(ValueError, match="sample size"):
        pixart(PROMPTS, num_inference_steps=1, clean_caption=False, output_type="np")


def test_pixart_embeddings_match_prompts(pixart: PixArtAlphaPipeline) -> None:
    embeds, mask, neg_embeds, neg_mask = pixart.encode_prompt(
        PROMPTS, do_classifier_free_guidance=True, negative_prompt="", device="cpu", clean_caption=False
    )
    assert embeds.shape == (2, PIXART_MAX_SEQUENCE_LENGTH, pixart.text_encoder.config.d_model)
    assert mask.shape == neg_mask.shape == (2, PIXART_MAX_SEQUENCE_LENGTH)
    latents = _latents(pixart_latent_shape(pixart, len(PROMPTS), RES))
    assert latents.shape == (2, 4, RES // 2, RES // 2)
    ref = pixart(PROMPTS, latents=latents, **PIXART_KW, **GEN_KW).images
    got = pixart(
        prompt_embeds=embeds,
        prompt_attention_mask=mask,
        negative_prompt=None,  # default "" conflicts with negative_prompt_embeds
        negative_prompt_embeds=neg_embeds,
        negative_prompt_attention_mask=neg_mask,
        latents=latents,
        **PIXART_KW,
        **GEN_KW,
    ).images
    _check_images(got)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_sd3_generates(sd3: StableDiffusion3Pipeline) -> None:
    assert sd3.vae.config.latent_channels == sd3.transformer.config.in_channels == 16
    out = sd3(PROMPTS, generator=torch.Generator().manual_seed(0), **GEN_KW)
    _check_images(out.images)


def _sd3_embeddings_match_prompts(pipe: StableDiffusion3Pipeline) -> None:
    embeds, neg_embeds, pooled, neg_pooled = pipe.encode_prompt(
        PROMPTS, None, None, device="cpu", do_classifier_free_guidance=True
    )
    joint = pipe.transformer.config.joint_attention_dim
    assert embeds.shape == neg_embeds.shape == (2, 77 + 256, joint)
    assert pooled.shape == neg_pooled.shape == (2, pipe.transformer.config.pooled_projection_dim)
    latents = _latents(sd3_latent_shape(pipe, len(PROMPTS), RES))
    assert latents.shape == (2, 16, RES // 2, RES // 2)
    ref = pipe(PROMPTS, latents=latents, **GEN_KW).images
    got = pipe(
        prompt_embeds=embeds,
        negative_prompt_embeds=neg_embeds,
        pooled_prompt_embeds=pooled,
        negative_pooled_prompt_embeds=neg_pooled,
        latents=latents,
        **GEN_KW,
    ).images
    _check_images(got)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_sd3_embeddings_match_prompts(sd3: StableDiffusion3Pipeline) -> None:
    _sd3_embeddings_match_prompts(sd3)


def test_sd3_with_t5_reloads_plainly(tmp_path: Path) -> None:
    build_tiny_sd3(seed=0, resolution=RES, with_t5=True).save_pretrained(tmp_path)
    pipe = _quiet(StableDiffusion3Pipeline.from_pretrained(tmp_path, local_files_only=True))
    assert pipe.text_encoder_3 is not None and pipe.tokenizer_3 is not None
    _sd3_embeddings_match_prompts(pipe)
