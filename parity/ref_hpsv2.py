"""HPSv2 reference scores for a tiny random checkpoint; runs INSIDE the reference venv.

    .venv-ref/bin/python parity/ref_hpsv2.py SPEC.json OUT.json      # the parity tests
    .venv-ref/bin/python parity/ref_hpsv2.py --serve SPEC.json       # bench/package_baselines.py

SPEC.json (written by tests/test_parity_reference.py, or by the bench):
    {"checkpoint": a {'state_dict': ...} .pt as xswu/HPSv2 ships, for the open_clip model config
     "config" (a dict, the form open_clip's model_configs/*.json hold), "hps_version": "v2.0"|"v2.1",
     "tensor_resize_antialias": null | false,
     "cases": [{"prompt": str, "images": [png paths]}]}
OUT.json: {"cases": [{"score": hpsv2.img_score.score([paths], prompt, cp=checkpoint), ...}], ...}

The scores come from hpsv2 1.2.0's own `img_score.score` (its checkpoint load with strict
load_state_dict, its tokenizer call get_tokenizer('ViT-H-14'), its preprocess_val, forward and
feature product). `score` builds ViT-H-14 with pretrained='laion2B-s32B-b79K' (a download) on first
use through `initialize_model`; here its model cache `model_dict` is filled beforehand by the same
`create_model_and_transforms` call with the same arguments, on the tiny config registered in
hpsv2's bundled open_clip and no pretrained tag, so `initialize_model` does nothing.

tensor_resize_antialias: hpsv2's ResizeMaxSize calls torchvision's F.resize on a tensor without
`antialias`; torchvision >= 0.17 (this venv) then antialiases, older ones did not. null runs the
package as installed; false makes that one call pass antialias=False, i.e. what the same code did
with torchvision < 0.17, which is what evalkit's card pins (antialias: false).

With --serve (no OUT.json, no parity outputs), the same model is built once (not timed) and the
package's public call is timed as a user makes it, one pass over all cases per round the bench
asks for, so that the bench can interleave those passes with evalkit's: `img_score.score([that
prompt's paths], prompt, cp=checkpoint)` per case (`score_pass`). That call reads and loads the
checkpoint file on every call; that is the package's own cost and is timed with it. The rounds,
their protocol on stdin/stdout and their scores: parity/timing.py.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, TextIO

import timing  # parity/timing.py: python puts this script's folder first on sys.path

MODEL_NAME = "evalkit-tiny-hps"
CALL = "hpsv2.img_score.score([paths], prompt, cp=checkpoint) per prompt"


class _ResizeWithoutAntialias:
    """torchvision.transforms.functional as hpsv2's transform.py sees it, with resize's antialias off."""

    def __init__(self, functional):
        self._f = functional

    def __getattr__(self, name):
        return getattr(self._f, name)

    def resize(self, img, size, interpolation, *args, **kwargs):
        kwargs.setdefault("antialias", False)
        return self._f.resize(img, size, interpolation, *args, **kwargs)


def score_pass(img_score: Any, spec: dict[str, Any]) -> list[list[float]]:
    """One pass of the package's public call as a user makes it: `img_score.score([that prompt's paths],
    prompt, cp=checkpoint)` per case (it reads and loads the checkpoint file on every call: the
    package's own cost); the scores per case, one per image."""
    return [[float(s) for s in img_score.score(list(case["images"]), case["prompt"], cp=spec["checkpoint"],
                                                hps_version=spec.get("hps_version", "v2.0"))]
            for case in spec["cases"]]


def build_model(spec: dict[str, Any]) -> Any:
    """hpsv2.img_score with its model cache filled by the tiny config (CPU, float32, the spec's resize
    antialias), so that `score` builds nothing and downloads nothing; returns the img_score module."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    # CPU, so that img_score.device is 'cpu' and its torch.cuda.amp.autocast() is inactive: float32, as
    # evalkit computes (on a GPU the reference would score under fp16 autocast, not comparable at 1e-5).
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("HPS_ROOT", tempfile.mkdtemp(prefix="ref-hps-root-"))

    from hpsv2 import img_score
    from hpsv2.src.open_clip import create_model_and_transforms, factory
    from hpsv2.src.open_clip import transform as hps_transform

    factory._MODEL_CONFIGS[MODEL_NAME] = spec["config"]
    if spec.get("tensor_resize_antialias") is False:
        hps_transform.F = _ResizeWithoutAntialias(hps_transform.F)
    elif spec.get("tensor_resize_antialias") is not None:
        raise SystemExit("tensor_resize_antialias must be null or false")
    # The arguments of hpsv2.img_score.initialize_model, but the tiny config and no pretrained tag.
    model, _, preprocess_val = create_model_and_transforms(
        MODEL_NAME, None, precision="amp", device=img_score.device, jit=False, force_quick_gelu=False,
        force_custom_text=False, force_patch_dropout=False, force_image_size=None, pretrained_image=False,
        image_mean=None, image_std=None, light_augmentation=True, aug_cfg={}, output_dict=True,
        with_score_predictor=False, with_region_predictor=False)
    img_score.model_dict["model"] = model
    img_score.model_dict["preprocess_val"] = preprocess_val
    assert img_score.device == "cpu", img_score.device  # CUDA_VISIBLE_DEVICES was set before hpsv2's import
    return img_score


def package_versions(img_score: Any) -> dict[str, str]:
    import torch
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "module": img_score.__file__}


def parity_cases(img_score: Any, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Per case: the package's scores on the list and on the first image alone, and its tokenizer output."""
    import numpy as np

    out_cases = []
    for case in spec["cases"]:
        scores = img_score.score(list(case["images"]), case["prompt"], cp=spec["checkpoint"],
                                 hps_version=spec.get("hps_version", "v2.0"))
        single = img_score.score(case["images"][0], case["prompt"], cp=spec["checkpoint"],
                                 hps_version=spec.get("hps_version", "v2.0"))
        tokens = img_score.get_tokenizer("ViT-H-14")([case["prompt"]])[0]
        out_cases.append({"prompt": case["prompt"], "score": [float(np.float32(s)) for s in scores],
                          "score_first_alone": float(single[0]), "input_ids": tokens.tolist()})
    return out_cases


def main(spec_path: str, out_path: str) -> None:
    """The parity tests' mode: the reference outputs of every case to OUT.json."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    img_score = build_model(spec)
    result = {"cases": parity_cases(img_score, spec), "device": img_score.device,
              "versions": package_versions(img_score)}
    Path(out_path).write_text(json.dumps(result, indent=1), encoding="utf-8")


def serve(spec_path: str, stream: TextIO) -> None:
    """The bench's mode: the model built once, then timed passes of `score_pass` on request (parity/timing.py)."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    img_score = build_model(spec)
    timing.serve_rounds(stream, lambda: score_pass(img_score, spec), spec["cases"], CALL, package_versions(img_score))


if __name__ == "__main__":
    timing.serve_main(__doc__, main, serve)
