"""PRDC against its two references on identical features: torch-fidelity 0.4's precision/recall (the main
environment's own package, `metric_prc`, both its full and its RAM-saving path) and Naeem et al.'s prdc 0.2
(density/coverage, in .venv-ref through parity/ref_prdc.py).

Cases: Gaussian clouds (overlapping, shifted, wider), unequal sizes, and ReLU-like features with dead
dimensions (Inception pool3 is non-negative with some always-zero units). Each value is a count over
images divided by a size, so equality is checked as equal counts; torch-fidelity returns float32 means.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import parity_marks, run_reference

from evalkit.metrics.prdc import prdc_values

pytestmark = parity_marks()

CASES = {  # name: (n_real, n_fake, dim, shift, scale, relu_dead_dims)
    "overlapping": (300, 300, 32, 0.0, 1.0, 0),
    "shifted": (250, 320, 48, 0.4, 1.0, 0),
    "wider": (400, 200, 16, 0.0, 1.6, 0),
    "relu-dead": (300, 260, 64, 0.1, 0.9, 12),
    "far": (120, 150, 8, 3.0, 1.0, 0),
}


def _features(name: str) -> tuple[np.ndarray, np.ndarray]:
    n_real, n_fake, dim, shift, scale, dead = CASES[name]
    rng = np.random.default_rng(sorted(CASES).index(name))
    mix = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    real = rng.normal(size=(n_real, dim)) @ mix
    fake = (rng.normal(size=(n_fake, dim)) * scale + shift) @ mix
    if dead:
        real, fake = np.maximum(real, 0), np.maximum(fake, 0)
        real[:, :dead] = fake[:, :dead] = 0.0
    return real.astype(np.float32), fake.astype(np.float32)


@pytest.mark.parametrize("save_cpu_ram", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_precision_recall_equal_torch_fidelity(name, save_cpu_ram):
    from torch_fidelity.metric_prc import prc_features_to_metric

    real, fake = _features(name)
    ours = prdc_values(real, fake, pr_k=3)
    theirs = prc_features_to_metric(torch.from_numpy(fake), torch.from_numpy(real), prc_neighborhood=3,
                                    prc_batch_size=97, save_cpu_ram=save_cpu_ram, verbose=False)
    assert round(ours["precision"] * len(fake)) == round(theirs["precision"] * len(fake))
    assert round(ours["recall"] * len(real)) == round(theirs["recall"] * len(real))
    assert abs(ours["precision"] - theirs["precision"]) < 1e-6 and abs(ours["recall"] - theirs["recall"]) < 1e-6


@pytest.mark.parametrize("k", [3, 5])
def test_precision_recall_change_with_k(k):
    """The k the card names reaches the computation (a guard against a k that is ignored)."""
    real, fake = _features("shifted")
    assert prdc_values(real, fake, pr_k=k)["recall"] != prdc_values(real, fake, pr_k=k + 4)["recall"]


@pytest.mark.parametrize("k", [5, 3])
def test_density_coverage_equal_prdc(tmp_path, k):
    cases = []
    for name in sorted(CASES):
        real, fake = _features(name)
        np.save(tmp_path / f"{name}-real.npy", real)
        np.save(tmp_path / f"{name}-fake.npy", fake)
        cases.append({"name": name, "real": str(tmp_path / f"{name}-real.npy"),
                      "fake": str(tmp_path / f"{name}-fake.npy"), "nearest_k": k})
    out = run_reference("ref_prdc", {"cases": cases}, tmp_path)
    assert out["versions"]["prdc"] == "0.2"
    for case in out["cases"]:
        real, fake = _features(case["name"])
        ours = prdc_values(real, fake, dc_k=k)
        n_fake, n_real = len(fake), len(real)
        assert round(ours["density"] * k * n_fake) == round(case["density"] * k * n_fake), case["name"]
        assert round(ours["coverage"] * n_real) == round(case["coverage"] * n_real), case["name"]
        assert ours["density"] == pytest.approx(case["density"], abs=1e-12)
        assert ours["coverage"] == pytest.approx(case["coverage"], abs=1e-12)
