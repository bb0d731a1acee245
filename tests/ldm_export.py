"""Write a diffusers SD 1.x pipeline back out as one original-format (LDM / CompVis) checkpoint.

evalkit accepts the single-file ``.safetensors`` checkpoints people actually download, whose keys
follow the original latent-diffusion layout (``model.diffusion_model.input_blocks.0.0.weight``,
``first_stage_model.encoder.down.0.block.0.conv1.weight``,
``cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight``). The tests cannot
download one, so this module builds such a file from a tiny random diffusers pipeline.

The mapping is the exact inverse of diffusers' ``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint`` and ``convert_ldm_clip_checkpoint`` (in
``diffusers.loaders.single_file_utils``), written out independently so a test round trip through
``from_single_file`` checks diffusers' reader rather than a copy of it. It is generic over
``layers_per_block`` and the number of blocks, but covers only what SD 1.x-shaped pipelines use:
one CLIP text encoder, no SDXL ``conditioner.embedders`` layout and no OpenCLIP (SD 2.x) layout.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import PreTrainedModel

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

# diffusers ResnetBlock2D (UNet) sub-module -> LDM ResBlock sub-module.
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}

# Whole-key renames outside the down/mid/up blocks. class_embedding (projection/timestep class
# embeds) and add_embedding (SDXL text_time) both live at label_emb.0 in the original layout.
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding": "label_emb",  # nn.Embedding (num_class_embeds), e.g. the x4 upscaler
}

# diffusers VAE Attention sub-module -> LDM AttnBlock sub-module. The LDM q/k/v/proj_out are
# 1x1 Conv2d, so their weights get two trailing singleton dims (diffusers squeezes them on load).
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}

_VAE_TOP = {"conv_norm_out": "norm_out"}

_TENSOR_SUFFIX = re.compile(r"^(?P<module>.+)\.(?P<param>weight|bias)$")


def _split(key: str) -> tuple[str, str]:
    """Split ``a.b.weight`` into (``a.b``, ``weight``); every key we map ends in weight/bias."""
    match = _TENSOR_SUFFIX.match(key)
    if match is None:
        raise KeyError(f"unexpected parameter name {key!r} (expected it to end in .weight or .bias)")
    return match["module"], match["param"]


def _rename_prefix(key: str, table: dict[str, str]) -> str | None:
    """Rename the longest table entry that is a dotted prefix of ``key``; None when none is."""
    for old in sorted(table, key=len, reverse=True):
        if key == old or key.startswith(old + "."):
            return table[old] + key[len(old) :]
    return None


def _unet_resnet(rest: str) -> str:
    """Map ``norm1.weight``-style names inside a ResnetBlock2D to the LDM ResBlock names."""
    renamed = _rename_prefix(rest, _UNET_RESNET)
    if renamed is None:
        raise KeyError(f"unknown UNet resnet parameter {rest!r}")
    return renamed


def unet_to_ldm(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    """UNet state dict in LDM ``openaimodel.UNetModel`` keys (without the ``model.diffusion_model.`` prefix).

    LDM numbers its blocks flat: ``input_blocks.0`` is conv_in, then every down block contributes
    ``layers_per_block`` [ResBlock, (SpatialTransformer)] entries plus one Downsample entry (all but
    the last block); ``middle_block`` is ResBlock / SpatialTransformer / ResBlock; every up block
    contributes ``layers_per_block + 1`` entries and the Upsample sits inside the last of them,
    after the attention when the block has one.
    """
    lpb = unet.config.layers_per_block
    if not isinstance(lpb, int):
        raise NotImplementedError("per-block layers_per_block is not part of the SD 1.x layout")
    per_block = lpb + 1
    state = unet.state_dict()
    up_with_attn = {int(m[1]) for k in state if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}

    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        parts = key.split(".")
        new: str | None
        if parts[0] == "down_blocks":
            block, kind, idx, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"input_blocks.{1 + block * per_block + idx}.0.{_unet_resnet(rest)}"
            elif kind == "attentions":
                new = f"input_blocks.{1 + block * per_block + idx}.1.{rest}"
            elif kind == "downsamplers" and idx == 0 and rest.startswith("conv."):
                new = f"input_blocks.{1 + block * per_block + lpb}.0.op.{rest[len('conv.') :]}"
            else:
                new = None
        elif parts[0] == "mid_block":
            kind, idx, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            if kind == "resnets":
                new = f"middle_block.{2 * idx}.{_unet_resnet(rest)}"
            elif kind == "attentions" and idx == 0:
                new = f"middle_block.1.{rest}"
            else:
                new = None
        elif parts[0] == "up_blocks":
            block, kind, idx, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"output_blocks.{block * per_block + idx}.0.{_unet_resnet(rest)}"
            elif kind == "attentions":
                new = f"output_blocks.{block * per_block + idx}.1.{rest}"
            elif kind == "upsamplers" and idx == 0 and rest.startswith("conv."):
                slot = 2 if block in up_with_attn else 1
                new = f"output_blocks.{block * per_block + lpb}.{slot}.{rest}"
            else:
                new = None
        else:
            new = _rename_prefix(key, _UNET_TOP)
        if new is None:
            raise KeyError(f"no LDM name for UNet parameter {key!r}")
        if new in out:
            raise KeyError(f"two UNet parameters map to LDM key {new!r}")
        out[new] = tensor
    return out


def _vae_attention(rest: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor]:
    """Mid-block attention: rename, and reshape Linear weights [C, C] to 1x1 conv [C, C, 1, 1]."""
    module, param = _split(rest)
    if module not in _VAE_ATTN:
        raise KeyError(f"unknown VAE attention parameter {rest!r}")
    if module != "group_norm" and param == "weight":
        tensor = tensor[:, :, None, None]
    return f"{_VAE_ATTN[module]}.{param}", tensor


def vae_to_ldm(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    """VAE state dict in LDM ``AutoencoderKL`` keys (without the ``first_stage_model.`` prefix).

    The decoder is the trap: diffusers' ``up_blocks.0`` is the lowest resolution, LDM's ``up.0`` the
    highest, so block i maps to ``up.{n - 1 - i}``.
    """
    n_up = len(vae.config.up_block_types)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in vae.state_dict().items():
        parts = key.split(".")
        new: str | None = None
        value = tensor
        coder = parts[0]
        if coder in ("encoder", "decoder") and len(parts) > 2:
            section = parts[1]
            if section in ("down_blocks", "up_blocks"):
                block, kind, idx, rest = int(parts[2]), parts[3], int(parts[4]), ".".join(parts[5:])
                ldm_block = block if section == "down_blocks" else n_up - 1 - block
                ldm_section = "down" if section == "down_blocks" else "up"
                if kind == "resnets":
                    rest = rest.replace("conv_shortcut.", "nin_shortcut.")
                    new = f"{coder}.{ldm_section}.{ldm_block}.block.{idx}.{rest}"
                elif kind in ("downsamplers", "upsamplers") and idx == 0 and rest.startswith("conv."):
                    sampler = "downsample" if kind == "downsamplers" else "upsample"
                    new = f"{coder}.{ldm_section}.{ldm_block}.{sampler}.{rest}"
            elif section == "mid_block":
                kind, idx, rest = parts[2], int(parts[3]), ".".join(parts[4:])
                if kind == "resnets":
                    new = f"{coder}.mid.block_{idx + 1}.{rest.replace('conv_shortcut.', 'nin_shortcut.')}"
                elif kind == "attentions" and idx == 0:
                    name, value = _vae_attention(rest, tensor)
                    new = f"{coder}.mid.attn_1.{name}"
            else:
                inner = _rename_prefix(".".join(parts[1:]), _VAE_TOP)
                new = f"{coder}.{inner if inner is not None else '.'.join(parts[1:])}"
        elif coder in ("quant_conv", "post_quant_conv"):
            new = key
        if new is None:
            raise KeyError(f"no LDM name for VAE parameter {key!r}")
        out[new] = value
    return out


def clip_to_ldm(text_encoder: PreTrainedModel) -> dict[str, torch.Tensor]:
    """CLIPTextModel state dict in the ``cond_stage_model.transformer.`` (HF CLIP) layout, unprefixed.

    SD 1.x stored the Hugging Face CLIPTextModel as-is, so keys keep their names under
    ``text_model.``. transformers >= 5.6 flattened CLIPTextModel (no ``text_model`` wrapper);
    diffusers strips ``text_model.`` again for such models, so we add it back when it is missing.
    The non-persistent ``embeddings.position_ids`` buffer is written too, as real SD 1.x files
    carry it; the loader skips it.
    """
    state = dict(text_encoder.state_dict())
    inner = getattr(text_encoder, "text_model", text_encoder)
    position_ids = getattr(inner.embeddings, "position_ids", None)
    if position_ids is not None:
        prefix = "text_model." if inner is not text_encoder else ""
        state.setdefault(f"{prefix}embeddings.position_ids", position_ids)
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state.items()}


def ldm_state_dict(pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
    """The whole pipeline as one flat LDM-format state dict (UNet + VAE + CLIP text encoder)."""
    sections = (
        (UNET_PREFIX, unet_to_ldm(pipe.unet)),
        (VAE_PREFIX, vae_to_ldm(pipe.vae)),
        (CLIP_PREFIX, clip_to_ldm(pipe.text_encoder)),
    )
    # safetensors refuses non-contiguous tensors and storage shared between entries; cloning
    # also detaches the file contents from the live modules.
    return {
        prefix + key: tensor.detach().to("cpu").contiguous().clone()
        for prefix, part in sections
        for key, tensor in part.items()
    }


def export_ldm_checkpoint(pipe: StableDiffusionPipeline, path: Path) -> None:
    """Write ``pipe``'s UNet, VAE and text encoder to ``path`` as an original-layout safetensors file.

    Only weights go in: loading it back needs a diffusers pipeline folder for the configs
    (``from_single_file(path, config=folder)``), exactly like a downloaded checkpoint plus ``--base``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_state_dict(pipe), str(path), metadata={"format": "pt"})
