"""ImageReward reference scores for a tiny random checkpoint; runs INSIDE the reference venv.

    .venv-ref/bin/python parity/ref_imagereward.py SPEC.json OUT.json

SPEC.json (written by tests/test_parity_reference.py):
    {"pt": ImageReward.pt (original layout), "med_config": med_config.json,
     "tokenizer": a bert-style tokenizer folder standing in for bert-base-uncased,
     "vit": {"image_size", "patch_size", "width", "layers", "heads"},
     "cases": [{"prompt": str, "images": [png paths]}],
     "time_repeats": R   (optional; written by bench/package_baselines.py)}
OUT.json: {"cases": [{"score": [ImageReward.score(prompt, path) per image],
                      "rank": [...], "rank_rewards": [...]   (ImageReward.score(prompt, [paths]) / inference_rank),
                      "input_ids": [...], "attention_mask": [...]   (the reference tokenizer's output)}],
           "load": {"missing": [...], "unexpected": [...]}, "versions": {...},
           "timing": only with time_repeats, see `time_package`}

Everything numeric runs through the image-reward 1.5 package's own code: `ImageReward.ImageReward`
(`score`, `inference_rank`, its `MLP`, `_transform`), BLIP_Pretrain's `init_tokenizer`
(BertTokenizer.from_pretrained('bert-base-uncased')), med.py's BertModel and vit.py's
VisionTransformer. Only two sizes are made tiny, because the package hard-codes ViT-L at 224
and a 768-wide head: `create_vit` (as bound in blip_pretrain) is replaced by one that builds
the package's own VisionTransformer at the spec's size, and after construction `preprocess` is
rebuilt with the package's `_transform(image_size)` and `mlp` with the package's
`MLP(text_width)`. The checkpoint is loaded as ImageReward.utils.load does (strict=False).
bert-base-uncased is served offline from a throw-away HF hub cache holding the spec's tokenizer.

With "time_repeats", the package's own scoring call is also timed the way its README calls it
(under torch.no_grad, model loaded once and not timed): `model.score(prompt, [that prompt's
paths])` for every case, once untimed as a warm-up, then R timed passes over all cases. The
parity outputs above are computed first and are the same with or without timing.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FAKE_REVISION = "0" * 40


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


def time_package(model: Any, cases: list[dict[str, Any]], repeats: int) -> dict[str, Any]:
    """Seconds per pass of `model.score(prompt, [paths])` over every case (one untimed warm-up pass first),
    and the last pass's scores (per case, one per image) for the caller's parity check."""
    import statistics

    import torch

    def one_pass() -> list[list[float]]:
        out = []
        with torch.no_grad():  # as the package's README scores
            for case in cases:
                rewards = model.score(case["prompt"], list(case["images"]))
                out.append([float(r) for r in rewards] if isinstance(rewards, list) else [float(rewards)])
        return out  # a one-image list comes back as a bare float (torch.squeeze in inference_rank)

    t0 = time.perf_counter()
    scores = one_pass()
    warmup = time.perf_counter() - t0
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        scores = one_pass()
        seconds.append(time.perf_counter() - t0)
    return {"call": "ImageReward.score(prompt, [paths]) per prompt, under torch.no_grad", "repeats": repeats,
            "seconds": seconds, "median_seconds": statistics.median(seconds), "warmup_seconds": warmup,
            "calls": len(cases), "images": sum(len(c["images"]) for c in cases),
            "torch_threads": torch.get_num_threads(), "scores": scores}


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    cache = Path(tempfile.mkdtemp(prefix="ref-ir-hub-"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the reference runs on CPU in float32, as evalkit is compared here
    os.environ["HF_HUB_CACHE"] = str(fake_hub_cache(Path(spec["tokenizer"]), cache))

    import ImageReward as RM
    import torch
    import transformers
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

    out_cases = []
    with torch.no_grad():
        for case in spec["cases"]:
            prompt, images = case["prompt"], case["images"]
            tokens = model.blip.tokenizer(prompt, padding="max_length", truncation=True, max_length=35,
                                          return_tensors="pt")
            single = [float(model.score(prompt, path)) for path in images]
            rank, rewards = model.inference_rank(prompt, images) if len(images) > 1 else (None, None)
            listed = model.score(prompt, list(images)) if len(images) > 1 else None
            out_cases.append({"prompt": prompt, "score": single, "rank": rank, "rank_rewards": rewards,
                              "score_list": listed, "input_ids": tokens["input_ids"][0].tolist(),
                              "attention_mask": tokens["attention_mask"][0].tolist()})
    result = {"cases": out_cases,
              "load": {"missing": list(msg.missing_keys), "unexpected": list(msg.unexpected_keys)},
              "tokenizer_vocab_size": len(model.blip.tokenizer),
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                           "image-reward": getattr(RM, "__version__", "1.5"),
                           "module": ir_module.__file__}}
    if spec.get("time_repeats"):
        result["timing"] = time_package(model, spec["cases"], int(spec["time_repeats"]))
    Path(out_path).write_text(json.dumps(result, indent=1), encoding="utf-8")
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
