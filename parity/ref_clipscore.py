"""torchmetrics CLIPScore reference scores for a tiny random CLIP folder; runs INSIDE the reference venv.

    .venv-ref/bin/python parity/ref_clipscore.py SPEC.json OUT.json

SPEC.json (written by tests/test_parity_clip.py):
    {"model": a local CLIP folder (config.json + model.safetensors + tokenizer.json + preprocessor_config.json)
              whose path contains "openai" (torchmetrics 1.9 only loads names containing "openai",
              "jinaai" or "zer0int"; with "openai" it calls CLIPModel/CLIPProcessor.from_pretrained on it),
     "pairs": [{"image": png path, "caption": str}]}
OUT.json: {"score": CLIPScore over all pairs (mean of 100·cos clamped at 0, as .compute() returns),
           "pairs": [{"score": CLIPScore of that pair alone, "cos100": 100·cos from _clip_score_update,
                      "input_ids": the processor's tokens, as torchmetrics slices them}], ...}

Images go in as torchmetrics expects them: uint8 tensors (3, H, W), here from PIL's RGB decoding of
the PNG; CLIPScore's CLIPProcessor then resizes (shorter side, PIL bicubic), center-crops, rescales
and normalises them. Captions are tokenized by the processor with padding=True and no truncation;
torchmetrics slices input_ids/attention_mask to max_position_embeddings (77) when longer. CPU, float32.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # captions-only devices default to cuda when available

    import numpy as np
    import torch
    import torchmetrics
    import transformers
    from PIL import Image
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update, _get_features
    from torchmetrics.multimodal import CLIPScore

    metric = CLIPScore(model_name_or_path=spec["model"])
    model, processor = metric.model, metric.processor
    model.eval()

    def image_tensor(path: str) -> torch.Tensor:
        with Image.open(path) as image:
            return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()

    images = [image_tensor(p["image"]) for p in spec["pairs"]]
    captions = [p["caption"] for p in spec["pairs"]]
    out_pairs = []
    with torch.no_grad():
        for image, caption in zip(images, captions, strict=True):
            single = CLIPScore(model_name_or_path=lambda: (model, processor))
            single.update(image, caption)
            cos100, _ = _clip_score_update(image, caption, model, processor)
            ids = processor(text=[caption], return_tensors="pt", padding=True)["input_ids"][0]
            ids = ids[: model.config.text_config.max_position_embeddings]
            out_pairs.append({"caption": caption, "score": float(single.compute()),
                              "cos100": float(cos100[0]), "input_ids": ids.tolist()})
        metric.update(images, captions)
        total = float(metric.compute())
        batched, _ = _clip_score_update(images, captions, model, processor)
        pixel = processor(images=[images[0]], return_tensors="pt")["pixel_values"][0]
        features = _get_features([images[0]], "image", torch.device("cpu"), model, processor)
    result = {"score": total, "pairs": out_pairs, "cos100_batched": [float(v) for v in batched],
              "pixel_values_0": pixel.flatten().tolist(), "image_features_0": features[0].tolist(),
              "classes": {"model": type(model).__name__, "processor": type(processor).__name__,
                          "image_processor": type(processor.image_processor).__name__,
                          "tokenizer": type(processor.tokenizer).__name__},
              "versions": {"torch": torch.__version__, "torchmetrics": torchmetrics.__version__,
                           "transformers": transformers.__version__}}
    Path(out_path).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
