"""The authors' aesthetic scoring (improved-aesthetic-predictor's simple_inference.py); runs INSIDE the reference venv.

    .venv-ref/bin/python parity/ref_aesthetic.py SPEC.json OUT.json

SPEC.json (written by tests/test_parity_aesthetic.py): {"clip": a transformers CLIP folder (what
openai/clip-vit-large-patch14 is), "head": the head .pth, "images": [png path]}.
OUT.json: {"scores": [one per image], "embeddings": [[normalised embedding]], "versions": {...}}.

The steps of simple_inference.py on CPU: OpenAI CLIP's vision tower (`clip.model.VisionTransformer`, the
module `clip.load("ViT-L/14")` returns as `.visual`) and its preprocess (`clip.clip._transform(n_px)`), one
image at a time: `encode_image` → `normalized()` in numpy (its zero-norm guard included) → the MLP on
`torch.from_numpy(...).float()`. The MLP is the `layers` of aesthetics_predictor's
AestheticsPredictorV2Linear (shunk031's packaged port: the authors' MLP module for module, same names),
loaded from the head .pth as the authors' `model.load_state_dict(torch.load(...))` loads it.

The CLIP weights come as transformers' layout and are mapped to OpenAI's here (the inverse of
transformers' own convert_clip_original_pytorch_to_hf.py): q/k/v projections concatenated into
`in_proj_*`, `visual_projection.weight` transposed into `proj`; every tensor is used exactly once.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path


def openai_visual_state(hf: dict, layers: int) -> dict:
    import torch

    v = "vision_model."
    state = {"conv1.weight": hf[v + "embeddings.patch_embedding.weight"],
             "class_embedding": hf[v + "embeddings.class_embedding"],
             "positional_embedding": hf[v + "embeddings.position_embedding.weight"],
             "ln_pre.weight": hf[v + "pre_layrnorm.weight"], "ln_pre.bias": hf[v + "pre_layrnorm.bias"],
             "ln_post.weight": hf[v + "post_layernorm.weight"], "ln_post.bias": hf[v + "post_layernorm.bias"],
             "proj": hf["visual_projection.weight"].T.contiguous()}
    for i in range(layers):
        src, dst = f"{v}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            state[dst + f"attn.in_proj_{kind}"] = torch.cat([hf[src + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
            state[dst + f"attn.out_proj.{kind}"] = hf[src + f"self_attn.out_proj.{kind}"]
            state[dst + f"ln_1.{kind}"] = hf[src + f"layer_norm1.{kind}"]
            state[dst + f"ln_2.{kind}"] = hf[src + f"layer_norm2.{kind}"]
            state[dst + f"mlp.c_fc.{kind}"] = hf[src + f"mlp.fc1.{kind}"]
            state[dst + f"mlp.c_proj.{kind}"] = hf[src + f"mlp.fc2.{kind}"]
    used = {k for k in hf if k.startswith(v) or k == "visual_projection.weight"}
    unused = used - {k for k in hf if k.startswith(v + "embeddings.position_ids")} - _sources(layers, v)
    if unused:
        raise SystemExit(f"vision tensors left unmapped: {sorted(unused)[:5]}")
    return state


def _sources(layers: int, v: str) -> set:
    names = {v + n for n in ("embeddings.patch_embedding.weight", "embeddings.class_embedding",
                             "embeddings.position_embedding.weight", "pre_layrnorm.weight", "pre_layrnorm.bias",
                             "post_layernorm.weight", "post_layernorm.bias")} | {"visual_projection.weight"}
    for i in range(layers):
        for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "layer_norm1",
                     "layer_norm2", "mlp.fc1", "mlp.fc2"):
            names |= {f"{v}encoder.layers.{i}.{part}.{kind}" for kind in ("weight", "bias")}
    return names


def main(spec_path: str, out_path: str) -> None:
    import clip
    import numpy as np
    import torch
    from aesthetics_predictor import AestheticsPredictorV2Linear
    from PIL import Image
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    config = json.loads((Path(spec["clip"]) / "config.json").read_text(encoding="utf-8"))
    vc = config["vision_config"]
    size, patch, width = int(vc["image_size"]), int(vc["patch_size"]), int(vc["hidden_size"])
    layers, heads, dim = int(vc["num_hidden_layers"]), int(vc["num_attention_heads"]), int(config["projection_dim"])
    visual = clip.model.VisionTransformer(input_resolution=size, patch_size=patch, width=width, layers=layers,
                                          heads=heads, output_dim=dim)
    visual.load_state_dict(openai_visual_state(load_file(str(Path(spec["clip"]) / "model.safetensors")), layers),
                           strict=True)
    visual.eval()
    preprocess = clip.clip._transform(size)

    port = AestheticsPredictorV2Linear(CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                                        num_attention_heads=2, image_size=8, patch_size=8,
                                                        projection_dim=dim))
    mlp = port.layers
    mlp.load_state_dict({k.removeprefix("layers."): t for k, t in torch.load(spec["head"]).items()}, strict=True)
    mlp.eval()

    def normalized(a, axis=-1, order=2):  # simple_inference.py's
        l2 = np.atleast_1d(np.linalg.norm(a, order, axis))
        l2[l2 == 0] = 1
        return a / np.expand_dims(l2, axis)

    scores, embeddings = [], []
    for path in spec["images"]:
        with Image.open(path) as pil_image:
            image = preprocess(pil_image).unsqueeze(0)
        with torch.no_grad():
            image_features = visual(image)  # CLIP.encode_image is self.visual(image.type(self.dtype))
        im_emb_arr = normalized(image_features.cpu().detach().numpy())
        with torch.no_grad():
            prediction = mlp(torch.from_numpy(im_emb_arr).type(torch.FloatTensor))
        scores.append(float(prediction[0, 0]))
        embeddings.append(im_emb_arr[0].tolist())
    versions = {name: metadata.version(name) for name in ("openai-clip", "simple-aesthetics-predictor", "torch")}
    Path(out_path).write_text(json.dumps({"scores": scores, "embeddings": embeddings, "versions": versions}),
                              encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
