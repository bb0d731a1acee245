"""Convert the official ImageReward checkpoint into transformers BLIP classes + safetensors.

THUDM/ImageReward ships `ImageReward.pt` (a pickled state dict of its `ImageReward` module:
`blip.visual_encoder.*` = BLIP's timm-style ViT, `blip.text_encoder.*` = BLIP's "med" BERT
with cross-attention, `mlp.layers.*` = the linear head) and `med_config.json`. The reference
package cannot live in evalkit's environment, but the same tensors fit transformers'
`BlipVisionModel` + `BlipTextModel` after a key rename, so this module renames them once and
writes a folder evalkit can load without pickles:

    <out>/vision/{config.json, model.safetensors}   BlipVisionModel
    <out>/text/{config.json, model.safetensors}     BlipTextModel (no pooler; cross-attention built)
    <out>/head.safetensors                          the 5 linear layers, keys `layers.<i>.*`
    <out>/tokenizer/                                bert-base-uncased + [DEC] + [ENC], as BLIP's init_tokenizer
    <out>/conversion.json                           source hashes, configs used, keys the reference ignores too

The pickle is read only by `convert_imagereward`, which a user calls on purpose, and only
through `torch.load(weights_only=True)` (tensors and containers, no code). This module imports
nothing from evalkit, so it also runs in the separate reference environment of the parity tests.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FORMAT = "evalkit-imagereward/1"
VISION_DIR = "vision"
TEXT_DIR = "text"
HEAD_FILE = "head.safetensors"
TOKENIZER_DIR = "tokenizer"
CONVERSION_FILE = "conversion.json"

VISION_PREFIX = "blip.visual_encoder."
TEXT_PREFIX = "blip.text_encoder."
HEAD_PREFIX = "mlp."
# nn.Sequential(Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear) in ImageReward.py's MLP.
HEAD_LINEAR_INDICES = (0, 2, 4, 6, 7)
# In the checkpoint but unused by ImageReward.score (BLIP_Pretrain's contrastive projections, the
# text position-id buffer, a pooler if present); the reference loads with strict=False and ignores them.
IGNORED_PREFIXES = ("blip.vision_proj.", "blip.text_proj.", "blip.text_encoder.pooler.")
POSITION_IDS_KEY = "blip.text_encoder.embeddings.position_ids"

VIT_LAYER_NORM_EPS = 1e-6  # BLIP vit.py: norm_layer = partial(nn.LayerNorm, eps=1e-6)
VIT_HEAD_DIM = 64  # BLIP create_vit: base 768/12 heads, large 1024/16 heads
SPECIAL_TOKENS = ("[DEC]", "[ENC]")  # BLIP init_tokenizer: bos_token [DEC], additional special token [ENC]

_BLOCK = re.compile(r"blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)")
_BLOCK_PARTS = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
                "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_VIT_SINGLE = {"cls_token": "embeddings.class_embedding", "pos_embed": "embeddings.position_embedding",
               "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
               "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
               "norm.weight": "post_layernorm.weight", "norm.bias": "post_layernorm.bias"}


@dataclass
class SplitStateDict:
    """An ImageReward.pt state dict renamed into the three parts evalkit loads."""

    vision: dict[str, torch.Tensor] = field(default_factory=dict)
    text: dict[str, torch.Tensor] = field(default_factory=dict)
    head: dict[str, torch.Tensor] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def vision_key(original: str) -> str:
    """BLIP ViT key (without `blip.visual_encoder.`) → BlipVisionModel key."""
    if original in _VIT_SINGLE:
        return _VIT_SINGLE[original]
    match = _BLOCK.fullmatch(original)
    if match is None:
        raise ValueError(f"unknown BLIP ViT key {VISION_PREFIX}{original}")
    index, part, kind = match.groups()
    return f"encoder.layers.{index}.{_BLOCK_PARTS[part]}.{kind}"


def head_key(original: str) -> str:
    """`layers.<i>.<weight|bias>` (without `mlp.`) — kept as is, checked against the MLP layout."""
    match = re.fullmatch(r"layers\.(\d+)\.(weight|bias)", original)
    if match is None or int(match.group(1)) not in HEAD_LINEAR_INDICES:
        raise ValueError(f"unknown ImageReward head key {HEAD_PREFIX}{original}")
    return original


def split_state_dict(state: Mapping[str, torch.Tensor]) -> SplitStateDict:
    """Rename every tensor ImageReward.score uses; list the ones it ignores; refuse unknown ones."""
    split = SplitStateDict()
    unknown = []
    for key in sorted(state):
        tensor = state[key]
        if key.startswith(IGNORED_PREFIXES):
            split.ignored.append(key)
        elif key == POSITION_IDS_KEY:
            _check_position_ids(tensor)
            split.ignored.append(key)
        elif key.startswith(VISION_PREFIX):
            split.vision[vision_key(key[len(VISION_PREFIX):])] = tensor
        elif key.startswith(TEXT_PREFIX):
            split.text[key[len(TEXT_PREFIX):]] = tensor
        elif key.startswith(HEAD_PREFIX):
            split.head[head_key(key[len(HEAD_PREFIX):])] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"ImageReward state dict has {len(unknown)} unknown keys: {', '.join(unknown[:5])}")
    return split


def _check_position_ids(tensor: torch.Tensor) -> None:
    """The reference uses the stored buffer; transformers rebuilds it as arange, so it must be arange."""
    expected = torch.arange(tensor.shape[-1]).expand(tensor.shape)
    if not torch.equal(tensor.long(), expected):
        raise ValueError(f"{POSITION_IDS_KEY} is not 0..n-1; transformers' BlipTextModel would differ")


def vision_config(vision: Mapping[str, torch.Tensor], num_heads: int | None = None) -> Any:
    """BlipVisionConfig read off the tensor shapes (create_vit hard-codes them; shapes say the same)."""
    from transformers import BlipVisionConfig

    hidden = _shape(vision, "embeddings.class_embedding")[-1]
    patch = _shape(vision, "embeddings.patch_embedding.weight")[-1]
    grid = math.isqrt(_shape(vision, "embeddings.position_embedding")[1] - 1)
    layers = len({k.split(".")[2] for k in vision if k.startswith("encoder.layers.")})
    heads = num_heads or hidden // VIT_HEAD_DIM
    if heads < 1 or hidden % heads:
        raise ValueError(f"ViT width {hidden} is not divisible into {heads} heads; pass vision_heads")
    return BlipVisionConfig(hidden_size=hidden, intermediate_size=_shape(vision, "encoder.layers.0.mlp.fc1.weight")[0],
                            num_hidden_layers=layers, num_attention_heads=heads, image_size=grid * patch,
                            patch_size=patch, hidden_act="gelu", layer_norm_eps=VIT_LAYER_NORM_EPS,
                            attention_dropout=0.0)


def _shape(tensors: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in tensors:
        raise ValueError(f"ImageReward state dict lacks the ViT tensor that maps to {key}")
    return tuple(int(d) for d in tensors[key].shape)


def text_config(med: Mapping[str, Any], encoder_width: int, tokenizer: Any) -> Any:
    """BlipTextConfig from med_config.json; cross-attention to the ViT width, as BLIP_Pretrain sets it.

    `is_decoder=True` only makes transformers build the cross-attention layers; the metric runs
    the encoder with a bidirectional mask, as ImageReward's BertModel(…, is_decoder=False) does.
    """
    from transformers import BlipTextConfig

    if med.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("med_config.json asks for relative position embeddings, which BlipTextModel lacks")
    if not med.get("add_cross_attention", False):
        raise ValueError("med_config.json has no cross-attention (add_cross_attention); not an ImageReward config")
    return BlipTextConfig(
        vocab_size=int(med["vocab_size"]), hidden_size=int(med["hidden_size"]), encoder_hidden_size=encoder_width,
        intermediate_size=int(med["intermediate_size"]), num_hidden_layers=int(med["num_hidden_layers"]),
        num_attention_heads=int(med["num_attention_heads"]),
        max_position_embeddings=int(med["max_position_embeddings"]), hidden_act=str(med["hidden_act"]),
        layer_norm_eps=float(med["layer_norm_eps"]), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[0]),
        sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id, is_decoder=True, use_cache=False,
    )


def check_against_model(model_class: type, config: Any, tensors: Mapping[str, torch.Tensor], what: str,
                        **model_kwargs: Any) -> None:
    """Every parameter the transformers model has is supplied with its shape, and nothing else."""
    with torch.device("meta"):
        model = model_class(config, **model_kwargs)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing, unexpected = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
    if missing or unexpected or wrong:
        raise ValueError(f"{what}: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                         f"wrong shape {[(k, got[k], expected[k]) for k in wrong[:5]]}")


def check_head(head: Mapping[str, torch.Tensor], text_width: int) -> None:
    """Five linear layers chained from the text width down to one output (768→1024→128→64→16→1)."""
    width = text_width
    for index in HEAD_LINEAR_INDICES:
        weight, bias = head.get(f"layers.{index}.weight"), head.get(f"layers.{index}.bias")
        if weight is None or bias is None or weight.ndim != 2 or weight.shape[1] != width \
                or tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"ImageReward head layer {index} is missing or does not chain from width {width}")
        width = int(weight.shape[0])
    if width != 1:
        raise ValueError(f"ImageReward head ends in width {width}, not 1")


def load_tokenizer(source: str | Path, vocab_size: int) -> Any:
    """bert-base-uncased with BLIP's two special tokens, checked against the text vocabulary.

    transformers 5 may return a near-empty tokenizer offline instead of raising, so the size
    check is what catches a missing tokenizer.
    """
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(str(source))
    tokenizer.add_special_tokens({"bos_token": SPECIAL_TOKENS[0]})
    tokenizer.add_special_tokens({"additional_special_tokens": [SPECIAL_TOKENS[1]]})
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if len(tokenizer) != vocab_size or ids != [vocab_size - 2, vocab_size - 1]:
        raise ValueError(f"tokenizer {source} gives {len(tokenizer)} tokens with [DEC], [ENC] = {ids}; the text "
                         f"encoder has {vocab_size} (bert-base-uncased: 30522 + [DEC] 30522 + [ENC] 30523)")
    return tokenizer


def load_original(pt_path: str | Path) -> dict[str, torch.Tensor]:
    """ImageReward.pt as a flat state dict, unpickled with weights_only=True."""
    state = torch.load(str(pt_path), map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{pt_path} is not a flat state dict of tensors (as ImageReward.pt is)")
    return dict(state)


def convert_imagereward(pt_path: str | Path, med_config_path: str | Path, out_dir: str | Path, *,
                        tokenizer: str | Path = "bert-base-uncased", vision_heads: int | None = None) -> Path:
    """Write the converted folder (see the module docstring) and return it.

    `tokenizer` is bert-base-uncased's hub id or a local folder (the reference loads
    `BertTokenizer.from_pretrained('bert-base-uncased')`); `vision_heads` defaults to width/64,
    which is what BLIP's create_vit uses (16 for ViT-L). `out_dir` must not exist or be empty;
    the folder appears only when complete.
    """
    from transformers import BlipTextModel, BlipVisionModel

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    med = json.loads(Path(med_config_path).read_text(encoding="utf-8"))
    split = split_state_dict(load_original(pt_path))
    vision_cfg = vision_config(split.vision, vision_heads)
    tok = load_tokenizer(tokenizer, int(med["vocab_size"]))
    text_cfg = text_config(med, vision_cfg.hidden_size, tok)
    check_against_model(BlipVisionModel, vision_cfg, split.vision, "vision encoder")
    check_against_model(BlipTextModel, text_cfg, split.text, "text encoder", add_pooling_layer=False)
    check_head(split.head, text_cfg.hidden_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write(staging, split, vision_cfg, text_cfg, tok, _provenance(pt_path, med_config_path, split, vision_cfg))
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _write(folder: Path, split: SplitStateDict, vision_cfg: Any, text_cfg: Any, tok: Any,
           provenance: dict[str, Any]) -> None:
    for sub, cfg, tensors in ((VISION_DIR, vision_cfg, split.vision), (TEXT_DIR, text_cfg, split.text)):
        (folder / sub).mkdir()
        cfg.save_pretrained(str(folder / sub))
        _save(tensors, folder / sub / "model.safetensors")
    _save(split.head, folder / HEAD_FILE)
    tok.save_pretrained(str(folder / TOKENIZER_DIR))
    (folder / CONVERSION_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _save(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """safetensors refuses tensors that share storage (tied or views), which a pickle may hold; copy only those."""
    from safetensors.torch import save_file

    owned, storages = {}, set()
    for key, tensor in sorted(tensors.items()):
        storage = tensor.untyped_storage()
        whole = tensor.storage_offset() == 0 and storage.nbytes() == tensor.numel() * tensor.element_size()
        shared = storage.data_ptr() in storages
        storages.add(storage.data_ptr())
        owned[key] = tensor.detach() if whole and tensor.is_contiguous() and not shared \
            else tensor.detach().clone().contiguous()
    save_file(owned, str(path), metadata={"format": "pt"})


def _provenance(pt_path: str | Path, med_config_path: str | Path, split: SplitStateDict,
                vision_cfg: Any) -> dict[str, Any]:
    """No paths or times, so converting the same files twice gives the same bytes (and fingerprint)."""
    return {"format": FORMAT, "source_sha256": {"ImageReward.pt": _sha256(pt_path),
                                                "med_config.json": _sha256(med_config_path)},
            "vision_heads": vision_cfg.num_attention_heads, "ignored_keys": split.ignored}


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
