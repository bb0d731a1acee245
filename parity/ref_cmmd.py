"""CMMD as the authors' code computes it, on a tiny random CLIP; runs INSIDE the reference venv.

    .venv-ref/bin/python parity/ref_cmmd.py SPEC.json OUT.json

SPEC.json (written by tests/test_parity_cmmd.py): {"clip": a transformers CLIP folder with its
preprocessor_config.json (what openai/clip-vit-large-patch14-336 is), "real": [image path], "fake": [image
path], "batch_size": int, "port": optional path to a checkout of sayakpaul/cmmd-pytorch}.
OUT.json: {"restated": {"real" | "fake": [[embedding]], "cmmd_float32", "cmmd_float64"},
"port": {"cmmd", "real", "fake"} when a checkout was given, "versions": {...}}.

Neither google-research/cmmd (JAX) nor its PyTorch port is a package, so "restated" is the port's code
path step for step, written here: io_util's `_center_crop_and_resize` (PIL: square crop with floored
offsets, `resize((size, size), BICUBIC)`) and `np.asarray(im).astype(np.float32)`, batches collated by a
torch DataLoader as io_util does, `/ 255.0`; embedding.py's `_resize_bicubic` (torch bicubic to the same
size), `CLIPImageProcessor(do_normalize=True, do_center_crop=False, do_resize=False, do_rescale=False)`,
`CLIPVisionModelWithProjection(...).image_embeds` divided by its norm; distance.py's `mmd` (σ = 10, scale
1000, the biased estimator through x·y and squared norms) in float32 as main.py calls it
(`.astype("float32")`), and once more on float64 inputs. With "port", the checkout's own modules run instead
(embedding.ClipEmbeddingModel with its model name pointed at the tiny folder, io_util.compute_embeddings_for_dir
on the two folders, distance.mmd).
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

SIGMA, SCALE = 10, 1000


def mmd(x, y):
    import torch

    x, y = torch.from_numpy(x), torch.from_numpy(y)
    x_sq, y_sq = torch.diag(x @ x.T), torch.diag(y @ y.T)
    gamma = 1 / (2 * SIGMA ** 2)
    k_xx = torch.mean(torch.exp(-gamma * (-2 * (x @ x.T) + x_sq[:, None] + x_sq[None, :])))
    k_xy = torch.mean(torch.exp(-gamma * (-2 * (x @ y.T) + x_sq[:, None] + y_sq[None, :])))
    k_yy = torch.mean(torch.exp(-gamma * (-2 * (y @ y.T) + y_sq[:, None] + y_sq[None, :])))
    return float(SCALE * (k_xx + k_yy - 2 * k_xy))


def restated(spec: dict) -> dict:
    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    processor = CLIPImageProcessor.from_pretrained(spec["clip"])
    model = CLIPVisionModelWithProjection.from_pretrained(spec["clip"]).eval()
    size = processor.crop_size["height"]

    def read(path: str) -> np.ndarray:
        im = Image.open(path)
        w, h = im.size
        side = min(w, h)
        top, left = (h - side) // 2, (w - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((size, size), resample=Image.BICUBIC)
        return np.asarray(im).astype(np.float32)

    def embed(paths: list) -> np.ndarray:
        out = []
        for batch in DataLoader([read(p) for p in paths], batch_size=int(spec["batch_size"])):
            images = batch.numpy() / 255.0
            images = torch.from_numpy(images.transpose(0, 3, 1, 2))
            images = torch.nn.functional.interpolate(images, size=(size, size), mode="bicubic")
            images = images.permute(0, 2, 3, 1).numpy()
            inputs = processor(images=images, do_normalize=True, do_center_crop=False, do_resize=False,
                               do_rescale=False, return_tensors="pt")
            with torch.no_grad():
                embs = model(**inputs).image_embeds.cpu()
            embs /= torch.linalg.norm(embs, axis=-1, keepdims=True)
            out.append(np.asarray(embs))
        return np.concatenate(out)

    real, fake = embed(spec["real"]), embed(spec["fake"])
    return {"real": real.tolist(), "fake": fake.tolist(),
            "cmmd_float32": mmd(real.astype("float32"), fake.astype("float32")),
            "cmmd_float64": mmd(real.astype("float64"), fake.astype("float64"))}


def port(spec: dict) -> dict:
    import shutil
    import tempfile

    sys.path.insert(0, spec["port"])
    import distance
    import embedding
    import io_util

    embedding._CLIP_MODEL_NAME = spec["clip"]  # the module reads it in ClipEmbeddingModel.__init__
    model = embedding.ClipEmbeddingModel()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("real", "fake"):
            folder = Path(tmp) / side
            folder.mkdir()
            for i, path in enumerate(spec[side]):  # its glob order is sorted names: keep the given order
                shutil.copy(path, folder / f"{i:04d}{Path(path).suffix}")
            out[side] = io_util.compute_embeddings_for_dir(str(folder), model, int(spec["batch_size"])).astype(
                "float32")
    return {"cmmd": float(distance.mmd(out["real"], out["fake"]).numpy()), "real": out["real"].tolist(),
            "fake": out["fake"].tolist()}


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    out = {"restated": restated(spec),
           "versions": {name: metadata.version(name) for name in ("transformers", "torch", "pillow")}}
    if spec.get("port"):
        out["port"] = port(spec)
    Path(out_path).write_text(json.dumps(out), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
