"""ImageReward reference scores for a tiny random checkpoint; runs INSIDE the reference venv.

    .venv-ref/bin/python parity/ref_imagereward.py SPEC.json OUT.json      # the parity tests
    .venv-ref/bin/python parity/ref_imagereward.py --serve SPEC.json       # bench/package_baselines.py

SPEC.json (written by tests/test_parity_reference.py, or by the bench):
    {"pt": ImageReward.pt (original layout), "med_config": med_config.json,
     "tokenizer": a bert-style tokenizer folder standing in for bert-base-uncased,
     "vit": {"image_size", "patch_size", "width", "layers", "heads"},
     "cases": [{"prompt": str, "images": [png paths]}]}
OUT.json: {"cases": [{"score": [ImageReward.score(prompt, path) per image],
                      "rank": [...], "rank_rewards": [...]   (ImageReward.score(prompt, [paths]) / inference_rank),
                      "input_ids": [...], "attention_mask": [...]   (the reference tokenizer's output)}],
           "load": {"missing": [...], "unexpected": [...]}, "versions": {...}}

Everything numeric runs through the image-reward 1.5 package's own code: `ImageReward.ImageReward`
(`score`, `inference_rank`, its `MLP`, `_transform`), BLIP_Pretrain's `init_tokenizer`
(BertTokenizer.from_pretrained('bert-base-uncased')), med.py's BertModel and vit.py's
VisionTransformer. Only two sizes are made tiny, because the package hard-codes ViT-L at 224
and a 768-wide head: `create_vit` (as bound in blip_pretrain) is replaced by one that builds
the package's own VisionTransformer at the spec's size, and after construction `preprocess` is
rebuilt with the package's `_transform(image_size)` and `mlp` with the package's
`MLP(text_width)`. The checkpoint is loaded as ImageReward.utils.load does (strict=False).
bert-base-uncased is served offline from a throw-away HF hub cache holding the spec's tokenizer.

With --serve (no OUT.json, no parity outputs), the same model is built once (not timed) and the
package's own scoring call is timed the way its README calls it, one pass over all cases per
round the bench asks for, so that the bench can interleave those passes with evalkit's:
`model.score(prompt, [that prompt's paths])` per case under torch.no_grad (`score_pass`). The
rounds, their protocol on stdin/stdout and their scores: parity/timing.py.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, TextIO

import timing  # parity/timing.py: python puts this script's folder first on sys.path

FAKE_REVISION = "0" * 40
CALL = "ImageReward.score(prompt, [paths]) per prompt, under torch.no_grad"


def fake_hub_cache(tokenizer: Path, root: Path) -> Path:
    """An HF hub cache in which 'bert-base-uncased' resolves offline to the given tokenizer files."""
    repo = root / "models--bert-base-uncased"
    snapshot = repo / "snapshots" / FAKE_REVISION
    snapshot.mkdir(parents=True)
    for f in tokenizer.iterdir():
        if f.is_file():
            shutil.copyfile(f, snapshot / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_REVISION)
    return root


def score_pass(model: Any, cases: list[dict[str, Any]]) -> list[list[float]]:
    """One pass of the package's own call as its README scores: `model.score(prompt, [that prompt's
    paths])` per case under torch.no_grad; the scores per case, one per image."""
    import torch

    out = []
    with torch.no_grad():
        for case in cases:
            rewards = model.score(case["prompt"], list(case["images"]))
            out.append([float(r) for r in rewards] if isinstance(rewards, list) else [float(rewards)])
    return out  # a one-image list comes back as a bare float (torch.squeeze in inference_rank)


def prepare(spec: dict[str, Any]) -> Path:
    """The environment the package is loaded in (offline, CPU, bert-base-uncased from a throw-away hub
    cache holding the spec's tokenizer), before torch is imported; returns that cache, to remove after."""
    cache = Path(tempfile.mkdtemp(prefix="ref-ir-hub-"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the reference runs on CPU in float32, as evalkit is compared here
    os.environ["HF_HUB_CACHE"] = str(fake_hub_cache(Path(spec["tokenizer"]), cache))
    return cache


def build_model(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The package's ImageReward at the spec's tiny sizes with the checkpoint loaded as
    ImageReward.utils.load does: (model in eval mode, load_state_dict's result, ImageReward.ImageReward)."""
    import torch
    from ImageReward.models.BLIP import blip_pretrain
    from ImageReward.models.BLIP.vit import VisionTransformer

    ir_module = importlib.import_module("ImageReward.ImageReward")  # the module (the package re-exports the class)
    vit = spec["vit"]

    def tiny_create_vit(vit_name, image_size, use_grad_checkpointing=False, ckpt_layer=0, drop_path_rate=0):
        encoder = VisionTransformer(img_size=vit["image_size"], patch_size=vit["patch_size"], embed_dim=vit["width"],
                                    depth=vit["layers"], num_heads=vit["heads"],
                                    use_grad_checkpointing=use_grad_checkpointing, ckpt_layer=ckpt_layer,
                                    drop_path_rate=0.1)  # as create_vit('large'); inactive in eval
        return encoder, vit["width"]

    blip_pretrain.create_vit = tiny_create_vit
    torch.manual_seed(0)
    model = ir_module.ImageReward(med_config=spec["med_config"], device="cpu")
    model.preprocess = ir_module._transform(vit["image_size"])
    model.mlp = ir_module.MLP(model.blip.text_encoder.config.hidden_size)
    state = torch.load(spec["pt"], map_location="cpu")  # as ImageReward.utils.load
    msg = model.load_state_dict(state, strict=False)
    model = model.to("cpu")
    model.eval()
    return model, msg, ir_module


def package_versions(ir_module: Any) -> dict[str, str]:
    import ImageReward as RM
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "image-reward": getattr(RM, "__version__", "1.5"), "module": ir_module.__file__}


def parity_cases(model: Any, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case: the package's tokenizer output, score per image, inference_rank and score on the list."""
    import torch

    out_cases = []
    with torch.no_grad():
        for case in cases:
            prompt, images = case["prompt"], case["images"]
            tokens = model.blip.tokenizer(prompt, padding="max_length", truncation=True, max_length=35,
                                          return_tensors="pt")
            single = [float(model.score(prompt, path)) for path in images]
            rank, rewards = model.inference_rank(prompt, images) if len(images) > 1 else (None, None)
            listed = model.score(prompt, list(images)) if len(images) > 1 else None
            out_cases.append({"prompt": prompt, "score": single, "rank": rank, "rank_rewards": rewards,
                              "score_list": listed, "input_ids": tokens["input_ids"][0].tolist(),
                              "attention_mask": tokens["attention_mask"][0].tolist()})
    return out_cases


def main(spec_path: str, out_path: str) -> None:
    """The parity tests' mode: the reference outputs of every case to OUT.json."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    cache = prepare(spec)
    try:
        model, msg, ir_module = build_model(spec)
        result = {"cases": parity_cases(model, spec["cases"]),
                  "load": {"missing": list(msg.missing_keys), "unexpected": list(msg.unexpected_keys)},
                  "tokenizer_vocab_size": len(model.blip.tokenizer),
                  "versions": package_versions(ir_module)}
        Path(out_path).write_text(json.dumps(result, indent=1), encoding="utf-8")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def serve(spec_path: str, stream: TextIO) -> None:
    """The bench's mode: the model built once, then timed passes of `score_pass` on request (parity/timing.py)."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    cache = prepare(spec)
    try:
        model, _, ir_module = build_model(spec)
        timing.serve_rounds(stream, lambda: score_pass(model, spec["cases"]), spec["cases"], CALL,
                            package_versions(ir_module))
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    timing.serve_main(__doc__, main, serve)
