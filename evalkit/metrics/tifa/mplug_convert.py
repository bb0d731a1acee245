"""Convert modelscope's mPLUG VQA folder into the folder evalkit's `mplug` backend loads.

modelscope's `damo/mplug_visual-question-answering_coco_large_en` holds `pytorch_model.bin` (a pickled
state dict, possibly wrapped in `model`/`module`), `config.yaml` (MPlugConfig), the BERT json it names
(`config_bert.json`) and `vocab.txt`. The reference loads it with `strict=False`; the converter keeps
exactly the tensors inference uses and refuses a checkpoint that lacks one, writing:

    <out>/config.json        format, the MPlugConfig numbers, the sources' sha256
    <out>/model.safetensors  the inference tensors under evalkit.metrics.tifa.mplug's names
    <out>/vocab.txt          the question tokenizer's vocabulary, unchanged

Dropped, as inference never reads them: the momentum copies (`*_m.*`), CLIP's text tower and `proj`,
the fusion layers below `num_hidden_layers - fusion_layers` (the reference builds and skips them), the
position-id buffers and the LM head's copy of the tied word embeddings. The pickle is read only here,
when a user converts on purpose, through `torch.load(weights_only=True)` (tensors, no code).

    python -m evalkit.metrics.tifa.mplug_convert MODELSCOPE_DIR OUT_DIR
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

FORMAT = "evalkit-mplug/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.txt"
SOURCE_WEIGHTS = "pytorch_model.bin"
SOURCE_CONFIG = "config.yaml"

_DROPPED = re.compile(r"(.*_m\..*|visual_encoder\.(transformer|token_embedding|positional_embedding|ln_final|"
                      r"text_projection|logit_scale).*|visual_encoder\.visual\.proj|.*\.position_ids|"
                      r"text_decoder\.cls\.predictions\.decoder\.(weight|bias))")
_FUSION = re.compile(r"fusion_encoder\.encoder\.layer\.(\d+)\.(.*)")


def read_config(folder: Path) -> dict[str, Any]:
    """The MPlugConfig numbers from modelscope's config.yaml and the BERT json it names."""
    import yaml

    outer = yaml.safe_load((folder / SOURCE_CONFIG).read_text(encoding="utf-8")) or {}
    bert = json.loads((folder / str(outer.get("bert_config", "config_bert.json"))).read_text(encoding="utf-8"))
    # MPlugConfig's defaults where config.yaml is silent (modelscope configuration_mplug.py)
    return {"image_res": int(outer.get("image_res", 504)), "vision_width": int(outer.get("vision_width", 1024)),
            "vision_layers": int(outer.get("clip_vision_layers", 24)),
            "vision_patch": int(outer.get("clip_vision_patch_size", 14)),
            "hidden_size": bert["hidden_size"], "heads": bert["num_attention_heads"],
            "intermediate_size": bert["intermediate_size"], "vocab_size": bert["vocab_size"],
            "max_positions": bert["max_position_embeddings"], "type_vocab_size": bert["type_vocab_size"],
            "text_layers": bert["text_encoder_layers"], "fusion_layers": bert["fusion_layers"],
            "stride_layer": bert.get("stride_layer", 100), "decoder_layers": bert["text_decode_layers"],
            "layer_norm_eps": bert.get("layer_norm_eps", 1e-12), "fusion_built": bert["num_hidden_layers"],
            "beam_size": int(outer.get("beam_size", 5)), "min_length": int(outer.get("min_length", 1)),
            "max_length": int(outer.get("max_length", 10))}


def rename(state: Mapping[str, torch.Tensor], fusion_built: int, fusion_layers: int) -> dict[str, torch.Tensor]:
    """modelscope keys -> evalkit.metrics.tifa.mplug.MPlugVQA keys (the inference tensors only)."""
    start = max(0, fusion_built - fusion_layers)  # the reference's FusionEncoder.start_layer
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if _DROPPED.fullmatch(key):
            continue
        fusion = _FUSION.fullmatch(key)
        if fusion is not None:
            index = int(fusion.group(1)) - start
            if index >= 0:
                out[f"fusion.encoder.layer.{index}.{fusion.group(2)}"] = tensor
        elif key.startswith("visual_encoder.visual."):
            out[key[len("visual_encoder."):]] = tensor
        elif key.startswith(("visn_fc.", "visn_layer_norm.", "text_encoder.", "text_decoder.")):
            out[key] = tensor
        else:
            raise ValueError(f"unknown mPLUG key {key}")
    return out


def unwrap(checkpoint: Any) -> dict[str, torch.Tensor]:
    """As MPlug.from_pretrained: `model` / `module` wrappers, then every 'model.' removed from the keys."""
    for wrapper in ("model", "module"):
        if isinstance(checkpoint, dict) and wrapper in checkpoint:
            checkpoint = checkpoint[wrapper]
    return {k.replace("model.", ""): v for k, v in checkpoint.items()}


def convert_mplug(source: Path, out: Path) -> Path:
    """Write OUT (replacing it whole, so a killed conversion leaves no half folder)."""
    from safetensors.torch import save_file

    from evalkit.fileio.hashing import sha256_file
    from evalkit.metrics.tifa.mplug import MPlugConfig, MPlugVQA

    source, out = Path(source), Path(out)
    for name in (SOURCE_WEIGHTS, SOURCE_CONFIG, VOCAB_FILE):
        if not (source / name).is_file():
            raise FileNotFoundError(f"{source} has no {name}: not modelscope's mPLUG VQA folder")
    numbers = read_config(source)
    fusion_built = numbers.pop("fusion_built")
    config = MPlugConfig.from_json(numbers)
    state = rename(unwrap(torch.load(source / SOURCE_WEIGHTS, map_location="cpu", weights_only=True)),
                   fusion_built, config.fusion_layers)
    expected = {k: v.shape for k, v in MPlugVQA(config).state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k])]
    if missing or unexpected or wrong:
        raise ValueError(f"mPLUG checkpoint does not fit its config: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_file({k: v.float().contiguous() for k, v in state.items()}, str(staging / WEIGHTS_FILE))
        shutil.copyfile(source / VOCAB_FILE, staging / VOCAB_FILE)
        doc = {"format": FORMAT, **config.to_json(),
               "source": {name: sha256_file(source / name) for name in (SOURCE_WEIGHTS, SOURCE_CONFIG, VOCAB_FILE)}}
        (staging / CONFIG_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


def main(argv: list[str]) -> int:
    """The command line: one line and exit 2 on bad input (nothing written), the output folder otherwise."""
    if len(argv) != 2:
        print("usage: python -m evalkit.metrics.tifa.mplug_convert MODELSCOPE_DIR OUT_DIR", file=sys.stderr)
        return 2
    try:
        print(convert_mplug(Path(argv[0]), Path(argv[1])))
    except (OSError, ValueError, RuntimeError) as e:  # a missing file, a checkpoint that does not fit, a bad pickle
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
