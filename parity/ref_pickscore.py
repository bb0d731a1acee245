"""PickScore's published scoring snippet on a tiny random CLIP; runs INSIDE the reference venv.

    .venv-ref/bin/python parity/ref_pickscore.py SPEC.json OUT.json

SPEC.json (written by tests/test_parity_pickscore.py): {"model": a CLIP folder (what PickScore_v1 is),
"processor": a processor folder (tokenizer + preprocessor_config.json, as laion's CLIP-H repo holds),
"groups": [{"prompt": str, "images": [png path]}]}.
OUT.json: {"groups": [{"scores": [logit_scale.exp()·cos per image], "probs": [their softmax]}],
"image_processor": the class the processor loaded, "versions": {...}}.

`calc_probs` below is the snippet of yuvalkirstain/PickScore's README, step for step: AutoProcessor and
AutoModel from the two folders, the processor called on the PIL images (padding/truncation/max_length as
the snippet passes them) and on the one prompt, L2-normalised features, `logit_scale.exp() * text @ image.T`,
softmax over the prompt's images. The PNGs are opened with PIL and converted to RGB, as the snippet's
`Image.open` inputs are. CPU, float32, torch.no_grad().
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path


def main(spec_path: str, out_path: str) -> None:
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    device = "cpu"
    processor = AutoProcessor.from_pretrained(spec["processor"])
    model = AutoModel.from_pretrained(spec["model"]).eval().to(device)

    def calc_probs(prompt, images):
        image_inputs = processor(images=images, padding=True, truncation=True, max_length=77,
                                 return_tensors="pt").to(device)
        text_inputs = processor(text=prompt, padding=True, truncation=True, max_length=77,
                                return_tensors="pt").to(device)
        with torch.no_grad():
            image_embs = model.get_image_features(**image_inputs)
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = model.get_text_features(**text_inputs)
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            scores = model.logit_scale.exp() * (text_embs @ image_embs.T)[0]
            probs = torch.softmax(scores, dim=-1)
        return scores.cpu().tolist(), probs.cpu().tolist()

    groups = []
    for group in spec["groups"]:
        images = []
        for path in group["images"]:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        scores, probs = calc_probs(group["prompt"], images)
        groups.append({"scores": scores, "probs": probs})
    out = {"groups": groups, "image_processor": type(processor.image_processor).__name__,
           "versions": {name: metadata.version(name) for name in ("transformers", "torch", "pillow")}}
    Path(out_path).write_text(json.dumps(out), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
