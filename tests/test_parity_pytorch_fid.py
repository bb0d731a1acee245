"""FID against pytorch-fid 0.3.0 as a second reference (next to torchmetrics in test_fid.py), on identical inputs.

`parity/ref_pytorch_fid.py` runs pytorch-fid in the reference venv `.venv-ref` on the same random Inception
weights evalkit loads (evalkit.tiny.fid, torch-fidelity's layout; pytorch-fid's FID Inception uses the
same module names, so the "mapping" is the identity — the reference checks it key by key) and the same
299×299 PNGs (no resize on either side). Compared:

1. Fréchet distance on identical float64 statistics: evalkit's `fid_stats.frechet_distance` (eigenvalues of
   the symmetric √Σ₁Σ₂√Σ₁, rounding noise zeroed) vs `calculate_frechet_distance` (scipy sqrtm of Σ₁Σ₂).
   Full rank: ≤ 1e-10 relative. Rank-deficient (N < d): pytorch-fid's sqrtm keeps sqrt(rounding noise) of
   the null space in its trace, so it is LOWER than evalkit's, by less than evalkit's clean-up bound
   2·d·sqrt(λmax·d·eps_f64) (seen: ~5e-8 relative). Its eps=1e-6 diagonal offset runs only when sqrtm
   returns non-finite entries — not with scipy 1.17.1 on these inputs; forced, it equals
   FD(Σ₁+εI, Σ₂+εI) − 2dε and lowers the distance by O(√ε) (test_eps_fallback_differs_by_design).
2. pool3 features: pytorch-fid's network fed torch-fidelity's normalisation (u − 128)/128 through
   normalize_input=False matches evalkit's features ≤ 1e-5 abs — the network is the same. pytorch-fid's own
   pipeline normalises u/255 → 2·x − 1 = (256/255)·(u − 128)/128 + 1/255: equal only at u = 0 (a black
   image agrees), up to 1/128 apart at u = 255; its effect on the features and on FID is measured and
   documented (docs/fid-references.md), not hidden.

pytorch-fid's own Fréchet distance is not run on the 2048-d features: scipy's sqrtm of a 2048×2048 matrix
takes ~20 s on two CPU cores; (1) shows it agrees with evalkit's formula, so the FID effect of the
normalisation is computed with evalkit's. Skipped as a whole when `.venv-ref/bin/python` does not exist.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from support import parity_marks, run_reference

from evalkit.metrics import fid_stats
from evalkit.metrics.registry import create
from evalkit.tiny.clip import write_card
from evalkit.tiny.fid import write_random_inception

pytestmark = parity_marks()

FEATURE_ATOL = 1e-5
EPS = 1e-6  # pytorch-fid's calculate_frechet_distance default
N_IMAGES = 3  # per side; Inception at 299 costs ~0.35 s per image on two CPU cores, and runs 3 times


def _image(rng: np.random.Generator, kind: str) -> np.ndarray:
    """299×299 RGB: a colour ramp plus noise, saturating at 0 and 255 in places (both ends of the scale)."""
    ramp = np.linspace(-40, 300, 299)[None, :, None] if kind == "real" else np.linspace(300, -40, 299)[:, None, None]
    base = rng.integers(0, 256, (1, 1, 3))
    noise = rng.normal(0, 40 if kind == "real" else 70, (299, 299, 3))
    return np.clip(0.5 * base + 0.5 * ramp + noise, 0, 255).astype(np.uint8)


def _stats(rng: np.random.Generator, d: int, n1: int, n2: int, dead: int = 0) -> list[np.ndarray]:
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    x = rng.normal(size=(n1, d)) @ mix * 2
    y = rng.normal(0.1, 1.0, size=(n2, d)) @ (mix + 0.1 * rng.normal(size=(d, d)) / np.sqrt(d)) * 2
    x[:, :dead] = y[:, :dead] = 0.0  # dead (always-zero) features, as ReLU pool features have
    return [*fid_stats.mean_cov(x), *fid_stats.mean_cov(y)]


FRECHET_CASES = {  # name: (d, n1, n2, dead)
    "full-rank-64": (64, 500, 600, 0),
    "full-rank-128": (128, 1000, 800, 0),
    "rank-deficient-128": (128, 40, 50, 0),
    "rank-deficient-dead-128": (128, 30, 20, 16),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity-pytorch-fid")
    weights = write_random_inception(tmp / "inception-random.pth", seed=0)
    rng = np.random.default_rng(0)
    images: dict[str, list[str]] = {}
    pixels: dict[str, torch.Tensor] = {}
    for group in ("real", "fake", "black"):
        arrays = ([np.zeros((299, 299, 3), np.uint8)] if group == "black"
                  else [_image(rng, group) for _ in range(N_IMAGES)])
        images[group] = []
        for i, array in enumerate(arrays):
            path = tmp / f"{group}-{i}.png"
            Image.fromarray(array).save(path)
            images[group].append(str(path))
        pixels[group] = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    stats = {}
    frechet = []
    for name, case in FRECHET_CASES.items():
        stats[name] = _stats(np.random.default_rng(len(frechet)), *case)
        np.savez(tmp / f"{name}.npz", **dict(zip(("mu1", "sigma1", "mu2", "sigma2"), stats[name], strict=True)))
        frechet.append({"name": name, "npz": str(tmp / f"{name}.npz")})
    spec = {"weights": str(weights), "images": images, "frechet": frechet, "out_dir": str(tmp / "out")}
    with ThreadPoolExecutor(1) as pool:  # the reference venv starts (~5 s of imports) while evalkit extracts
        pending = pool.submit(run_reference, "ref_pytorch_fid", spec, tmp, 600)
        card = write_card(tmp / "fid-parity.yaml", "fid-parity", "fid", "coco-10k", {},
                          params={"resize": "tf1-bilinear", "weights": str(weights)}, higher_is_better=False)
        metric = create(str(card))
        metric.setup(torch.device("cpu"))
        ours = {group: metric.features(pixels[group]) for group in pixels}
        reference = pending.result()
    theirs = {kind: {group: np.load(path) for group, path in groups.items()}
              for kind, groups in reference["features"].items()}
    return {"reference": reference, "stats": stats, "pixels": pixels, "ours": ours, "theirs": theirs}


def _case(reference: dict, name: str) -> dict:
    return next(c for c in reference["frechet"] if c["name"] == name)


def _noise_bound(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """2·d·sqrt(floor): the most that sqrt of eigenvalues below evalkit's clean-up floor can add to 2·Tr√."""
    root = fid_stats.sqrt_psd(sigma1)
    inner = root @ sigma2 @ root
    lam_max = float(np.linalg.eigvalsh((inner + inner.T) / 2).max())
    d = sigma1.shape[0]
    return 2 * d * float(np.sqrt(lam_max * d * np.finfo(np.float64).eps))


def _fid(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance of two small feature sets (N ≪ d) through N×N matrices, exact.

    With A = (X − μ₁)/√(N₁−1), B = (Y − μ₂)/√(N₂−1): Σ₁ = AᵀA, Σ₂ = BᵀB, and the non-zero eigenvalues of
    √Σ₁Σ₂√Σ₁ are the squared singular values of ABᵀ, so Tr(Σ₁Σ₂)^½ = ‖ABᵀ‖_*. A 2048-d frechet_distance
    costs ~10 s on two busy cores, this microseconds; test_normalisation_difference_is_quantified checks it
    against fid_stats.frechet_distance on a slice of the features."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    a = (x - x.mean(0)) / np.sqrt(len(x) - 1)
    b = (y - y.mean(0)) / np.sqrt(len(y) - 1)
    diff = x.mean(0) - y.mean(0)
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2 * np.linalg.svd(a @ b.T, compute_uv=False).sum())


def test_reference_loaded_the_same_weights(setup):
    reference = setup["reference"]
    assert reference["versions"]["pytorch_fid"] == "0.3.0"
    assert reference["state_dict"] == {"keys": 566, "renamed": 0, "identical_keys": True}
    assert reference["weights_url"].endswith("pt_inception-2015-12-05-6726825d.pth")  # asked for, not fetched


def test_frechet_distance_full_rank(setup):
    reference, stats = setup["reference"], setup["stats"]
    for name in ("full-rank-64", "full-rank-128"):
        ours, theirs = fid_stats.frechet_distance(*stats[name]), _case(reference, name)
        print(f"{name}: evalkit {ours!r} pytorch-fid {theirs['value']!r} rel {(theirs['value'] - ours) / ours:.2e}")
        assert not theirs["fallback_printed"]
        assert theirs["value"] == pytest.approx(ours, rel=1e-10)


def test_frechet_distance_rank_deficient(setup):
    """N < d: evalkit zeroes the null space's rounding-noise eigenvalues; scipy's sqrtm keeps their square roots.

    sqrt(noise) has a non-negative real part, so pytorch-fid's trace term is larger and its distance smaller,
    by at most the bound evalkit's clean-up exists for. Its eps fallback does not run (scipy 1.17.1 returns a
    finite, if inaccurate, sqrtm of the singular product)."""
    reference, stats = setup["reference"], setup["stats"]
    for name in ("rank-deficient-128", "rank-deficient-dead-128"):
        ours, theirs = fid_stats.frechet_distance(*stats[name]), _case(reference, name)
        bound = _noise_bound(stats[name][1], stats[name][3])
        gap = ours - theirs["value"]
        print(f"{name}: evalkit {ours!r} pytorch-fid {theirs['value']!r} evalkit - pytorch-fid {gap:.3e} "
              f"(rel {gap / ours:.2e}, bound {bound:.3e}); warnings {theirs['warnings']}")
        assert not theirs["fallback_printed"], theirs["stdout"]
        assert 0 < gap <= bound
        assert theirs["value"] == pytest.approx(ours, rel=1e-6)


def test_eps_fallback_differs_by_design(setup):
    """pytorch-fid's fallback for a singular product: sqrtm((Σ₁+εI)(Σ₂+εI)) with Tr Σ₁, Tr Σ₂ unchanged.

    That is exactly FD(Σ₁+εI, Σ₂+εI) − 2dε; evalkit's clean-up zeroes the εI null-space eigenvalues (ε² is
    below its floor), so the identity holds within the same bound. Against the unmodified statistics it is
    an O(√ε) shift down (directions where one covariance is zero and the other is not gain sqrt(ε·λ))."""
    reference, stats = setup["reference"], setup["stats"]
    for name in FRECHET_CASES:
        mu1, s1, mu2, s2 = stats[name]
        d = s1.shape[0]
        offset = EPS * np.eye(d)
        identity = fid_stats.frechet_distance(mu1, s1 + offset, mu2, s2 + offset) - 2 * d * EPS
        theirs = _case(reference, name)["value_eps_fallback"]
        ours = fid_stats.frechet_distance(*stats[name])
        shift = ours - theirs
        print(f"{name}: forced eps fallback {theirs!r}, FD(S+eps) - 2d*eps {identity!r}, "
              f"evalkit - fallback {shift:.3e} (rel {shift / ours:.2e})")
        assert abs(theirs - identity) <= _noise_bound(s1 + offset, s2 + offset) + 1e-10 * abs(identity)
        if name.startswith("rank-deficient"):
            assert shift > 1e-5 * ours  # the documented difference: far beyond rounding
        else:
            assert abs(shift) <= 1e-4 * ours  # full rank: the offset is a small perturbation


def test_network_is_the_same_under_torch_fidelity_normalisation(setup):
    """pytorch-fid's InceptionV3(normalize_input=False) fed (u − 128)/128 == evalkit (torch-fidelity) features."""
    ours, theirs, pixels = setup["ours"], setup["theirs"]["prenormalised"], setup["pixels"]
    seen = np.load(setup["reference"]["inputs"]["prenormalised"])
    assert np.array_equal(seen, ((pixels["real"][0].float() - 128) / 128).numpy())  # what the network got
    diffs = {group: float(np.abs(ours[group] - theirs[group]).max()) for group in theirs}
    scale = float(np.abs(ours["real"]).max())
    print(f"prenormalised pool3: max |evalkit - pytorch-fid| {diffs} (feature scale {scale:.3f})")
    assert scale > 0.1 and float(np.ptp(ours["real"], axis=0).max()) > 0.01  # not degenerate
    assert max(diffs.values()) <= FEATURE_ATOL, diffs
    assert _fid(theirs["real"], theirs["fake"]) == pytest.approx(_fid(ours["real"], ours["fake"]), rel=1e-6)


def test_normalisation_difference_is_quantified(setup):
    """pytorch-fid's own pipeline: u/255 → 2·x − 1 = (256/255)·((u − 128)/128) + 1/255, vs torch-fidelity's
    (u − 128)/128. Equal only at u = 0; at u = 255 they are 1/128 apart. Measured on features and FID."""
    ours, theirs, pixels = setup["ours"], setup["theirs"]["default"], setup["pixels"]
    u = pixels["real"][0].double()
    seen = np.load(setup["reference"]["inputs"]["default"]).astype(np.float64)
    tf = ((u - 128) / 128).numpy()
    assert np.abs(seen - (2 * u / 255 - 1).numpy()).max() <= 1e-6  # float32 ToTensor then 2x - 1
    assert np.abs(seen - (256 / 255 * tf + 1 / 255)).max() <= 1e-6
    gap = seen - tf
    assert np.abs(gap - u.numpy() / 32640).max() <= 1e-6  # the difference is u/32640: 0 at u=0, 1/128 at 255
    assert int(u.min()) == 0 and int(u.max()) == 255

    # a black image (u = 0 everywhere) is the only input on which both normalisations agree
    black = float(np.abs(ours["black"] - theirs["black"]).max())
    assert black <= FEATURE_ATOL, black

    feats = {group: (float(np.abs(ours[group] - theirs[group]).max()),
                     float(np.linalg.norm(ours[group] - theirs[group]) / np.linalg.norm(ours[group])))
             for group in ("real", "fake")}
    head = slice(0, 256)  # _fid is evalkit's Fréchet distance, checked here on 256 of the 2048 features
    sliced = fid_stats.frechet_distance(*fid_stats.mean_cov(ours["real"][:, head]),
                                        *fid_stats.mean_cov(theirs["fake"][:, head]))
    assert _fid(ours["real"][:, head], theirs["fake"][:, head]) == pytest.approx(sliced, rel=1e-6)
    fid_ours, fid_theirs = _fid(ours["real"], ours["fake"]), _fid(theirs["real"], theirs["fake"])
    both_ours = np.concatenate([ours["real"], ours["fake"]])
    both_theirs = np.concatenate([theirs["real"], theirs["fake"]])
    between = _fid(both_ours, both_theirs)
    mean_shift = float(np.abs(both_theirs.mean(0) - both_ours.mean(0)).max())
    print(f"default normalisation: features max abs / relative L2 difference {feats}; black image {black:.2e}; "
          f"FID real vs fake: evalkit {fid_ours:.6g}, pytorch-fid normalisation {fid_theirs:.6g} "
          f"(rel {(fid_theirs - fid_ours) / fid_ours:.2e}); FID of the same {len(both_ours)} images under the two "
          f"normalisations {between:.4g}; max |mean shift| {mean_shift:.3e}")
    assert min(f[0] for f in feats.values()) > 100 * FEATURE_ATOL  # a real difference, not rounding
    assert abs(fid_theirs - fid_ours) > 1e-4 * fid_ours
    assert between > 0
