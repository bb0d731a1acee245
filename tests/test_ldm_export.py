"""Round trip: tiny diffusers pipeline -> original-format (LDM) safetensors -> ``from_single_file``.

evalkit loads downloaded single-file SD checkpoints with a local ``--base`` pipeline folder for the
configs, fully offline. These tests pin down that diffusers' reader accepts what our exporter
writes, bit for bit, without touching the network, so the exporter can stand in for a real
checkpoint in the rest of the suite.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    infer_diffusers_model_type,
)
from safetensors.torch import load_file

from evalkit.tiny.sd import build_tiny_sd

try:  # `tests` is a namespace package when the repo root is importable (editable install)...
    from tests.ldm_export import export_ldm_checkpoint, unet_to_ldm, vae_to_ldm
except ImportError:  # ...otherwise pytest's rootdir-less "prepend" import puts tests/ itself on sys.path.
    from ldm_export import export_ldm_checkpoint, unet_to_ldm, vae_to_ldm

COMPONENTS = ("unet", "vae", "text_encoder")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly on any connection attempt: the load must not fall back to the Hub for configs."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[StableDiffusionPipeline, Path, Path]:
    """Seed-0 pipeline exported to LDM format, plus a *seed-1* pipeline saved as the base folder.

    The base holds different weights on purpose: equality with the seed-0 tensors then proves they
    came from the single file and not from the base folder's own safetensors.
    """
    root = tmp_path_factory.mktemp("ldm")
    pipe = build_tiny_sd(seed=0, work=root / "tok0")
    build_tiny_sd(seed=1, work=root / "tok1").save_pretrained(root / "base")
    ckpt = root / "tiny-sd15.safetensors"
    export_ldm_checkpoint(pipe, ckpt)
    return pipe, ckpt, root / "base"


def _configs_only(base: Path, dest: Path) -> Path:
    """Copy of the base folder without any weights, like a config-only ``--base`` download."""
    shutil.copytree(base, dest, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return dest


def _assert_same_weights(expected: StableDiffusionPipeline, got: StableDiffusionPipeline) -> None:
    for name in COMPONENTS:
        want, have = getattr(expected, name).state_dict(), getattr(got, name).state_dict()
        assert want.keys() == have.keys(), name
        # from_single_file builds modules on the meta device and silently skips keys it cannot
        # map, so a missed key shows up as a meta tensor rather than an error.
        on_meta = [k for k, v in have.items() if v.is_meta]
        assert not on_meta, f"{name}: never loaded: {on_meta[:5]}"
        differ = [k for k in want if not torch.equal(want[k], have[k])]
        assert not differ, f"{name}: {len(differ)} tensors differ, e.g. {differ[:5]}"


def test_key_layout_is_original_format(exported: tuple[StableDiffusionPipeline, Path, Path]) -> None:
    pipe, ckpt, _ = exported
    keys = set(load_file(str(ckpt)))
    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.")
    assert all(k.startswith(prefixes) for k in keys)
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in keys), prefix
    # Landmarks of the real SD 1.x file, and no diffusers-style names left over.
    for key in (
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.input_blocks.1.0.in_layers.0.weight",
        "model.diffusion_model.input_blocks.1.1.proj_in.weight",
        "model.diffusion_model.input_blocks.2.0.op.weight",
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.middle_block.2.emb_layers.1.weight",
        "model.diffusion_model.output_blocks.1.1.conv.weight",
        "model.diffusion_model.time_embed.0.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.encoder.down.0.downsample.conv.weight",
        "first_stage_model.decoder.up.1.upsample.conv.weight",
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight",
        "first_stage_model.encoder.mid.attn_1.q.weight",
        "first_stage_model.quant_conv.weight",
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
        "cond_stage_model.transformer.text_model.embeddings.position_ids",
    ):
        assert key in keys, key
    assert not any(s in k for k in keys for s in ("down_blocks", "up_blocks", "mid_block", "resnets"))
    assert load_file(str(ckpt))["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4
    # diffusers sniffs the model type from keys; ours must read as plain SD 1.x.
    assert infer_diffusers_model_type(load_file(str(ckpt))) == "v1"
    n_weights = sum(len(getattr(pipe, n).state_dict()) for n in COMPONENTS)
    assert len(keys) == n_weights + 1  # + the CLIP position_ids buffer


@pytest.mark.parametrize("base_kind", ["full", "configs-only"])
def test_from_single_file_round_trip_offline(
    exported: tuple[StableDiffusionPipeline, Path, Path], base_kind: str, tmp_path: Path, no_network: None
) -> None:
    pipe, ckpt, base = exported
    if base_kind == "configs-only":
        base = _configs_only(base, tmp_path / "base")
    loaded = StableDiffusionPipeline.from_single_file(str(ckpt), config=str(base), local_files_only=True)
    _assert_same_weights(pipe, loaded)
    # Non-weight components come from the base folder.
    assert loaded.scheduler.config.beta_schedule == "scaled_linear"
    assert loaded.tokenizer("a photo").input_ids == pipe.tokenizer("a photo").input_ids
    assert loaded.safety_checker is None


@pytest.mark.parametrize(
    "unet_kwargs",
    [
        # Upsampler after an attention (slot .2.conv), 3 levels, 2 layers per block.
        {
            "layers_per_block": 2,
            "block_out_channels": (8, 16, 16),
            "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        },
        # label_emb from a projection class embedding.
        {
            "layers_per_block": 1,
            "block_out_channels": (8, 16),
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "class_embed_type": "projection",
            "projection_class_embeddings_input_dim": 8,
        },
    ],
)
def test_unet_mapping_inverts_diffusers_converter(unet_kwargs: dict[str, object]) -> None:
    """Shapes the tiny SD config does not reach, checked directly against diffusers' converter."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4, **unet_kwargs
    )
    ldm = {f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(unet).items()}
    # diffusers reads an Upsample from either slot, so only the layout check catches a wrong one:
    # real files put it at .2 after a SpatialTransformer (SD 1.5: output_blocks.5.2.conv) else .1.
    for key in ldm:
        if key.endswith(".conv.weight") and ".output_blocks." in key:
            block = key.split(".")[3]
            has_attn = f"model.diffusion_model.output_blocks.{block}.1.proj_in.weight" in ldm
            assert key.split(".")[4] == ("2" if has_attn else "1"), key
    back = convert_ldm_unet_checkpoint(ldm, dict(unet.config))
    want = unet.state_dict()
    assert back.keys() == want.keys()
    assert all(torch.equal(back[k], want[k]) for k in want)


def test_vae_mapping_inverts_diffusers_converter() -> None:
    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(4, 8, 8),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=4,
    )
    ldm = {f"first_stage_model.{k}": v for k, v in vae_to_ldm(vae).items()}
    back = convert_ldm_vae_checkpoint(ldm, dict(vae.config))
    want = vae.state_dict()
    assert back.keys() == want.keys()
    assert all(torch.equal(back[k], want[k]) for k in want)
