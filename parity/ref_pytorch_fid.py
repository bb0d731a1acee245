"""pytorch-fid 0.3.0 reference features and Fréchet distances; runs INSIDE the reference venv.

    .venv-ref/bin/python parity/ref_pytorch_fid.py SPEC.json OUT.json

SPEC.json (written by tests/test_parity_pytorch_fid.py):
    {"weights": a .pth state dict in torch-fidelity's FeatureExtractorInceptionV3 layout (what evalkit loads,
                here evalkit.tiny.fid's random weights),
     "images": {"real": [png], "fake": [png], "black": [png]}   (RGB, 299×299: no resize on either side),
     "frechet": [{"name": str, "npz": path holding mu1, sigma1, mu2, sigma2 (float64)}],
     "out_dir": a folder for the arrays}
OUT.json: {"state_dict": how the weights were mapped, "weights_url": what pytorch-fid asked for,
           "features": {"default": {"real" | "fake" | "black": .npy path}, "prenormalised": {"real" | "fake": ...}},
           "inputs": {"default" | "prenormalised": .npy path of the first real image as the network saw it},
           "frechet": [{"name", "value", "fallback_printed", "value_eps_fallback", "eps", "warnings"}],
           "versions": {...}}

Features, two ways, both with pytorch-fid's own InceptionV3([3], use_fid_inception=True) (pool3, 2048-d):
- "default": pytorch-fid's own pipeline, `fid_score.get_activations` on the PNG files (PIL RGB →
  torchvision ToTensor, i.e. u/255, then the model's resize_input (bilinear to 299: the identity here)
  and normalize_input: 2·x − 1). This is what `calculate_fid_given_paths` feeds the network.
- "prenormalised": InceptionV3([3], normalize_input=False) fed (u − 128)/128 computed here from the same
  uint8 pixels: torch-fidelity's (and so evalkit's) normalisation, which isolates the network itself.

pytorch-fid builds its FID Inception (torchvision's Inception3, num_classes=1008, aux_logits=False, with
the FIDInception* blocks) and then calls `load_state_dict_from_url(FID_WEIGHTS_URL)`; that name is patched
in pytorch_fid.inception to return the mapped state dict — no network. torch-fidelity adapted its
Inception from pytorch-fid and kept the module names, so the mapping is the identity: same 566 keys, same
shapes (checked here; anything else is an error, and load_state_dict itself is strict).

Fréchet distances: `fid_score.calculate_frechet_distance` (scipy.linalg.sqrtm of Σ₁Σ₂, default eps=1e-6)
on the given statistics, as installed ("value"; whether it printed its "adding eps to diagonal" fallback
message is recorded), and once more with that fallback forced ("value_eps_fallback": the first sqrtm call is
made to return non-finite entries, so the function goes on to sqrtm((Σ₁+εI)(Σ₂+εI)), its documented
behaviour for a singular product). CPU, float32 network, float64 statistics.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import warnings
from pathlib import Path


def map_state_dict(torch_fidelity: dict, target: dict) -> tuple[dict, dict]:
    """torch-fidelity FeatureExtractorInceptionV3 keys → pytorch-fid FID Inception keys (the identity)."""
    missing, unexpected = sorted(set(target) - set(torch_fidelity)), sorted(set(torch_fidelity) - set(target))
    if missing or unexpected:
        raise SystemExit(f"state dicts differ: missing {missing[:5]}, unexpected {unexpected[:5]}")
    shapes = [k for k in target if tuple(target[k].shape) != tuple(torch_fidelity[k].shape)]
    if shapes:
        raise SystemExit(f"state dict shapes differ: {shapes[:5]}")
    return dict(torch_fidelity), {"keys": len(target), "renamed": 0, "identical_keys": True}


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)

    import numpy as np
    import pytorch_fid
    import scipy
    import torch
    import torchvision
    from PIL import Image
    from pytorch_fid import fid_score, inception

    source = torch.load(spec["weights"], map_location="cpu", weights_only=True)
    requested: list[str] = []
    mapping: dict = {}

    def load_state_dict_from_url(url, *args, **kwargs):  # what fid_inception_v3 calls; no download
        requested.append(url)
        template = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                                   init_weights=False)
        state, info = map_state_dict(source, template.state_dict())
        mapping.update(info)
        return state

    inception.load_state_dict_from_url = load_state_dict_from_url
    default = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], use_fid_inception=True).eval()
    prenormalised = inception.InceptionV3([3], normalize_input=False, use_fid_inception=True).eval()
    assert requested == [inception.FID_WEIGHTS_URL] * 2, requested

    seen: dict[str, np.ndarray] = {}

    def capture(name):
        def hook(module, args):
            seen.setdefault(name, args[0][0].detach().numpy().copy())
        return hook

    default.blocks[0].register_forward_pre_hook(capture("default"))
    prenormalised.blocks[0].register_forward_pre_hook(capture("prenormalised"))

    def uint8(path: str) -> torch.Tensor:
        with Image.open(path) as image:
            return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()

    features: dict[str, dict[str, str]] = {"default": {}, "prenormalised": {}}
    for group in ("real", "fake", "black"):  # "real" first: the captured inputs are of its first image
        files = list(spec["images"][group])
        acts = fid_score.get_activations(files, default, batch_size=len(files), dims=2048, device="cpu",
                                         num_workers=0)
        np.save(out_dir / f"default-{group}.npy", acts)
        features["default"][group] = str(out_dir / f"default-{group}.npy")
        if group == "black":
            continue  # only needed with pytorch-fid's own normalisation (the one input where the two agree)
        x = (torch.stack([uint8(f) for f in files]).float() - 128) / 128
        with torch.no_grad():
            pre = prenormalised(x)[0].squeeze(3).squeeze(2).numpy()
        np.save(out_dir / f"prenormalised-{group}.npy", pre)
        features["prenormalised"][group] = str(out_dir / f"prenormalised-{group}.npy")
    inputs = {}
    for name, array in seen.items():
        np.save(out_dir / f"input-{name}.npy", array)
        inputs[name] = str(out_dir / f"input-{name}.npy")

    real_sqrtm = scipy.linalg.sqrtm

    def failing_first_sqrtm(a, *args, **kwargs):
        if "disp" in kwargs:  # the first call, sqrtm(Σ₁Σ₂, disp=False): report a singular product
            return np.full(a.shape, np.nan), np.inf
        return real_sqrtm(a, *args, **kwargs)

    frechet = []
    for case in spec["frechet"]:
        with np.load(case["npz"]) as data:
            stats = [data[k] for k in ("mu1", "sigma1", "mu2", "sigma2")]
        printed = io.StringIO()
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
            warnings.simplefilter("always")
            value = float(fid_score.calculate_frechet_distance(*stats))
        forced = io.StringIO()
        fid_score.linalg.sqrtm = failing_first_sqrtm
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(forced):
                warnings.simplefilter("ignore")
                value_eps = float(fid_score.calculate_frechet_distance(*stats))
        finally:
            fid_score.linalg.sqrtm = real_sqrtm
        assert "adding 1e-06 to diagonal" in forced.getvalue(), forced.getvalue()
        frechet.append({"name": case["name"], "value": value, "fallback_printed": bool(printed.getvalue()),
                        "stdout": printed.getvalue(), "value_eps_fallback": value_eps, "eps": 1e-6,
                        "warnings": sorted({f"{w.category.__name__}: {w.message}" for w in caught})})

    result = {"state_dict": mapping, "weights_url": requested[0], "features": features, "inputs": inputs,
              "frechet": frechet,
              "versions": {"pytorch_fid": pytorch_fid.__version__, "torch": torch.__version__,
                           "torchvision": torchvision.__version__, "scipy": scipy.__version__,
                           "numpy": np.__version__, "module": inception.__file__}}
    Path(out_path).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
