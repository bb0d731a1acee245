"""HPSv2 reference scores for a tiny random checkpoint; runs INSIDE the reference venv.

    .venv-ref/bin/python parity/ref_hpsv2.py SPEC.json OUT.json

SPEC.json (written by tests/test_parity_reference.py):
    {"checkpoint": a {'state_dict': ...} .pt as xswu/HPSv2 ships, for the open_clip model config
     "config" (a dict, the form open_clip's model_configs/*.json hold), "hps_version": "v2.0"|"v2.1",
     "tensor_resize_antialias": null | false,
     "cases": [{"prompt": str, "images": [png paths]}],
     "time_repeats": R   (optional; written by bench/package_baselines.py)}
OUT.json: {"cases": [{"score": hpsv2.img_score.score([paths], prompt, cp=checkpoint), ...}], ...,
           "timing": only with time_repeats, see `time_package`}

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

With "time_repeats", the package's public call is also timed as a user makes it (model built
once beforehand, not timed): `img_score.score([that prompt's paths], prompt, cp=checkpoint)` for
every case, once untimed as a warm-up, then R timed passes over all cases. That call reads and
loads the checkpoint file on every call; that is the package's own cost and is timed with it.
The parity outputs above are computed first and are the same with or without timing.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL_NAME = "evalkit-tiny-hps"


class _ResizeWithoutAntialias:
    """torchvision.transforms.functional as hpsv2's transform.py sees it, with resize's antialias off."""

    def __init__(self, functional):
        self._f = functional

    def __getattr__(self, name):
        return getattr(self._f, name)

    def resize(self, img, size, interpolation, *args, **kwargs):
        kwargs.setdefault("antialias", False)
        return self._f.resize(img, size, interpolation, *args, **kwargs)


def time_package(img_score: Any, spec: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Seconds per pass of `img_score.score([paths], prompt, cp=...)` over every case (one untimed warm-up
    pass first), and the last pass's scores (per case, one per image) for the caller's parity check."""
    import statistics

    import torch

    def one_pass() -> list[list[float]]:
        return [[float(s) for s in img_score.score(list(case["images"]), case["prompt"], cp=spec["checkpoint"],
                                                    hps_version=spec.get("hps_version", "v2.0"))]
                for case in spec["cases"]]

    t0 = time.perf_counter()
    scores = one_pass()
    warmup = time.perf_counter() - t0
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        scores = one_pass()
        seconds.append(time.perf_counter() - t0)
    return {"call": "hpsv2.img_score.score([paths], prompt, cp=checkpoint) per prompt", "repeats": repeats,
            "seconds": seconds, "median_seconds": statistics.median(seconds), "warmup_seconds": warmup,
            "calls": len(spec["cases"]), "images": sum(len(c["images"]) for c in spec["cases"]),
            "torch_threads": torch.get_num_threads(), "scores": scores}


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    # CPU, so that img_score.device is 'cpu' and its torch.cuda.amp.autocast() is inactive: float32, as
    # evalkit computes (on a GPU the reference would score under fp16 autocast, not comparable at 1e-5).
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("HPS_ROOT", tempfile.mkdtemp(prefix="ref-hps-root-"))

    import numpy as np
    import torch
    import torchvision
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

    out_cases = []
    for case in spec["cases"]:
        scores = img_score.score(list(case["images"]), case["prompt"], cp=spec["checkpoint"],
                                 hps_version=spec.get("hps_version", "v2.0"))
        single = img_score.score(case["images"][0], case["prompt"], cp=spec["checkpoint"],
                                 hps_version=spec.get("hps_version", "v2.0"))
        tokens = img_score.get_tokenizer("ViT-H-14")([case["prompt"]])[0]
        out_cases.append({"prompt": case["prompt"], "score": [float(np.float32(s)) for s in scores],
                          "score_first_alone": float(single[0]), "input_ids": tokens.tolist()})
    assert img_score.device == "cpu", img_score.device
    result = {"cases": out_cases, "device": img_score.device,
              "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                           "module": img_score.__file__}}
    if spec.get("time_repeats"):
        result["timing"] = time_package(img_score, spec, int(spec["time_repeats"]))
    Path(out_path).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
