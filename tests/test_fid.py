"""FID / KID plugin: parity with torchmetrics, self-distance, reference cache, records, errors.

Random Inception weights (re-initialised: the default init gives near-zero features) are
saved to a local .pth and reach the metric through the card, the path real weights take.
"COCO" images are synthetic files named COCO_val2014_%012d.jpg for the coco-10k prompts.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics import fid_stats
from evalkit.metrics.context import MetricContext
from evalkit.metrics.fid import FID, reference_image, to_uint8_chw
from evalkit.metrics.registry import create
from evalkit.scoring.engine import score_step
from evalkit.tiny.clip import write_card
from evalkit.tiny.fid import write_random_inception

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_random_inception(tmp_path_factory.mktemp("inception") / "inception-random.pth")


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "evalkit" / "fid-refs"


@pytest.fixture
def coco_sets(small_sets):
    return [small_sets[1].head(3)]  # 3 coco-10k prompts (Inception at 299 costs ~0.5 s per image on CPU)


@pytest.fixture
def step_dir(generate, sd_dir, coco_sets, tmp_path):
    return generate(sd_dir, coco_sets, out=tmp_path / "run")[0].step_dir


@pytest.fixture
def coco_dir(tmp_path, coco_sets):
    """Synthetic COCO images of assorted sizes (landscape, portrait) for the prompts' ids."""
    folder = tmp_path / "coco"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i, prompt in enumerate(coco_sets[0]):
        h, w = (48, 72) if i % 2 else (90, 60)
        base = rng.integers(0, 256, (1, 1, 3))
        noise = rng.integers(-60, 60, (h, w, 3))
        pixels = np.clip(base + noise + np.linspace(0, 80, w)[None, :, None], 0, 255).astype(np.uint8)
        name = f"COCO_val2014_{prompt.data['coco_image_id']:012d}.jpg"
        assert name == prompt.data["coco_file"]
        Image.fromarray(pixels).save(folder / name, quality=95)
    return folder


def _card(tmp_path, weights, **params):
    return write_card(tmp_path / "fid-tiny.yaml", "fid-tiny", "fid", "coco-10k", {},
                      params={"resize": "tf1-bilinear", "weights": str(weights), "n": 4, "label": "FID-4",
                              "kid_subsets": 10, "kid_subset_size": 2, "kid_seed": 0, **params},
                      higher_is_better=False)


def _metric(card, coco_dir):
    return create(str(card), MetricContext(coco_images=Path(coco_dir) if coco_dir else None))


def _records(step_dir):
    rows = {}
    for line in (step_dir / "scores" / "fid-tiny").glob("*.jsonl"):
        for row in map(json.loads, line.read_text().splitlines()):
            rows[row["file"]] = row["records"][0]
    return dict(sorted(rows.items()))


class _Memo(torch.nn.Module):
    """The same torchmetrics extractor for FID and KID, run once per input batch."""

    num_features = 2048

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.seen = inner, {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.data_ptr() not in self.seen:
            self.seen[x.data_ptr()] = self.inner(x)
        return self.seen[x.data_ptr()]


def test_fid_and_kid_match_torchmetrics(step_dir, coco_dir, weights, tmp_path, coco_sets):
    from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
    from torchmetrics.image.kid import KernelInceptionDistance

    result = score_step(step_dir, [_metric(_card(tmp_path, weights), coco_dir)], CPU, batch_size=4, quiet=True)[0]
    v = result.values
    assert v["n"] == 3 and v["n_ref"] == 3 and v["label"] == "FID-3" and v["resize"] == "tf1-bilinear"
    assert v["kid_subset_size"] == 2 and v["kid_subsets"] == 10 and v["value"] == v["fid"] > 0

    # evalkit's order: fakes by prompt id (the score store's order), reals by COCO file name
    prompts = sorted(coco_sets[0], key=lambda p: p.id)
    fakes = torch.stack([to_uint8_chw(Image.open(step_dir / f"images/coco-10k/{p.id}_0.png")) for p in prompts])
    size = (fakes.shape[3], fakes.shape[2])
    files = sorted(p.data["coco_file"] for p in prompts)
    reals = torch.stack([reference_image(coco_dir / f, size) for f in files])
    assert reals.dtype == torch.uint8 and reals.shape == fakes.shape
    extractor = _Memo(NoTrainInceptionV3("inception-v3-compat", ["2048"], str(weights), antialias=False))
    fid = FrechetInceptionDistance(feature=extractor)
    kid = KernelInceptionDistance(feature=extractor, subsets=10, subset_size=2)
    for metric in (fid, kid):
        metric.update(reals, real=True)
        metric.update(fakes, real=False)
    expected_fid = float(fid.compute())
    torch.manual_seed(0)  # torchmetrics draws subsets from the global generator; evalkit from its own, same seed
    kid_mean, kid_std = (float(t) for t in kid.compute())
    # tolerance 1e-4 relative: torchmetrics computes KID in float32 and FID's trace via eigvals
    # of the non-symmetric product; evalkit uses float64 and the symmetric form throughout.
    assert v["fid"] == pytest.approx(expected_fid, rel=1e-4)
    assert v["kid"] == pytest.approx(kid_mean, rel=1e-4)
    assert v["kid_std"] == pytest.approx(kid_std, rel=1e-4) and kid_std > 1e-3 * abs(kid_mean)
    summary = json.loads(result.summary_path.read_text())
    assert summary["values"]["fid"] == v["fid"] and summary["higher_is_better"] is False


def test_fid_of_a_set_against_itself_is_zero(step_dir, weights, tmp_path, coco_sets):
    """The 'COCO' folder holds the generated PNGs themselves (same size: the crop is the identity)."""
    same = tmp_path / "same"
    same.mkdir()
    for p in coco_sets[0]:
        (same / p.data["coco_file"]).write_bytes((step_dir / f"images/coco-10k/{p.id}_0.png").read_bytes())
    v = score_step(step_dir, [_metric(_card(tmp_path, weights), same)], CPU, quiet=True)[0].values
    fake = np.stack([fid_stats.decode_features(r["features"]) for r in _records(step_dir).values()])
    scale = np.trace(fid_stats.mean_cov(fake)[1])
    assert scale > 1e-4  # features are not degenerate
    assert abs(v["fid"]) <= 1e-6 and abs(v["fid"]) <= 1e-6 * scale
    # (KID of a set against itself is not 0 by construction: the unbiased MMD² keeps k(x, x) in the
    # cross term and subsets are drawn independently per side — so it is not asserted here.)
    shifted = fid_stats.frechet_distance(*fid_stats.mean_cov(fake), *fid_stats.mean_cov(fake + 0.01))
    assert shifted == pytest.approx(2048 * 0.01**2, rel=1e-6)  # a mean shift alone: ‖Δμ‖²


def test_cached_reference_is_not_reused_for_other_images_with_the_same_names(step_dir, coco_dir, coco_sets, weights,
                                                                          tmp_path):
    card = _card(tmp_path, weights)
    against_coco = score_step(step_dir, [_metric(card, coco_dir)], CPU, quiet=True)[0]
    itself = tmp_path / "itself"  # the generated images under the COCO names: FID of a set against itself
    itself.mkdir()
    for prompt in coco_sets[0]:
        shutil.copyfile(step_dir / "images" / "coco-10k" / f"{prompt.id}_0.png", itself / prompt.data["coco_file"])
    against_itself = score_step(step_dir, [_metric(card, itself)], CPU, quiet=True)[0]
    assert against_coco.values["fid"] > 1.0
    assert abs(against_itself.values["fid"]) < 1e-6
    # without a folder the last computed entry for these names is used (a cluster without the images)
    cached_only = score_step(step_dir, [_metric(card, None)], CPU, quiet=True)[0]
    assert cached_only.values["fid"] == against_itself.values["fid"]


def test_reference_stats_are_computed_once_and_keyed_by_resolution(step_dir, coco_dir, weights, tmp_path,
                                                                   cache_home, monkeypatch):
    calls = []
    original = FID._compute_reference

    def counting(self, files, size):
        calls.append((tuple(files), size))
        return original(self, files, size)

    monkeypatch.setattr(FID, "_compute_reference", counting)
    card = _card(tmp_path, weights)
    first = score_step(step_dir, [_metric(card, coco_dir)], CPU, quiet=True)[0]
    artifact = next(cache_home.glob("*.npz"))
    stamp = artifact.stat().st_mtime_ns
    # a second scoring run (a fresh metric, no COCO folder now): records reused, reference from the cache
    second = score_step(step_dir, [_metric(card, None)], CPU, quiet=True)[0]
    assert len(calls) == 1 and (second.scored, second.reused) == (0, 3)
    assert artifact.stat().st_mtime_ns == stamp and len(list(cache_home.glob("*.npz"))) == 1
    assert second.values["fid"] == first.values["fid"] and second.values["kid"] == first.values["kid"]
    assert second.values["reference"] == first.values["reference"] == artifact.stem
    meta = json.loads(artifact.with_suffix(".json").read_text())
    assert meta["resize"] == "tf1-bilinear" and meta["n"] == 3 and meta["resolution"] == list(calls[0][1])
    metric = _metric(card, coco_dir)
    files, size = list(calls[0][0]), calls[0][1]
    assert fid_stats.reference_key(metric.reference_description(files, size)) == artifact.stem
    keys = {fid_stats.reference_key(metric.reference_description(files, s)) for s in [(32, 32), (64, 64), (64, 32)]}
    assert len(keys) == 3
    assert fid_stats.reference_key(metric.reference_description(files[:2], size)) != artifact.stem
    other = _metric(_card(tmp_path, tmp_path / "nowhere.pth"), coco_dir)
    with pytest.raises(EvalkitError, match=r"Inception weights .*nowhere\.pth do not exist"):
        other.reference_description(files, size)


def test_records_do_not_depend_on_batch_size_and_aggregate_is_exact(step_dir, coco_dir, weights, tmp_path,
                                                                     coco_sets):
    card = _card(tmp_path, weights)
    result = score_step(step_dir, [_metric(card, coco_dir)], CPU, batch_size=1, quiet=True)[0]
    stored = _records(step_dir)
    assert len(stored) == 3 and {r["coco_file"] for r in stored.values()} == {p.data["coco_file"] for p in coco_sets[0]}
    one = np.stack([fid_stats.decode_features(r["features"]) for r in stored.values()])
    assert one.dtype == np.float32 and one.shape == (3, 2048)
    assert len(next(iter(stored.values()))["features"]) == 4 * math.ceil(2048 * 4 / 3)  # base64 of float32
    metric = _metric(card, coco_dir)
    prompts = sorted(coco_sets[0], key=lambda p: p.id)
    fakes = torch.stack([to_uint8_chw(Image.open(step_dir / f"images/coco-10k/{p.id}_0.png")) for p in prompts])
    batched = metric.features(fakes)  # all three in one batch
    assert np.allclose(one, batched, rtol=1e-5, atol=1e-6)  # CPU conv kernels may differ in the last bits by batch
    # the stored records are exact: aggregate == the direct computation from the records' features
    key, ref = metric.reference(sorted(p.data["coco_file"] for p in prompts), (fakes.shape[3], fakes.shape[2]))
    mu, sigma = fid_stats.mean_cov(one.astype(np.float64))
    expected = fid_stats.frechet_distance(ref["mu"], ref["sigma"], mu, sigma)
    assert result.values["fid"] == pytest.approx(expected, rel=1e-6) and result.values["reference"] == key
    mu_b, sigma_b = fid_stats.mean_cov(batched)
    assert fid_stats.frechet_distance(ref["mu"], ref["sigma"], mu_b, sigma_b) == pytest.approx(expected, rel=1e-4)


def test_frechet_distance_matches_scipy_sqrtm():
    from scipy import linalg

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 8)), rng.normal(0.3, 1.5, size=(60, 8))
    (m1, s1), (m2, s2) = fid_stats.mean_cov(x), fid_stats.mean_cov(y)
    root = linalg.sqrtm(s1 @ s2).real
    expected = float((m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))
    assert fid_stats.frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-10)
    assert np.allclose(s1, np.cov(x, rowvar=False, ddof=1))


def test_missing_coco_folder_or_file_is_one_line(step_dir, coco_dir, weights, tmp_path, coco_sets):
    card = _card(tmp_path, weights)
    first = sorted(p.data["coco_file"] for p in coco_sets[0])[0]
    with pytest.raises(EvalkitError) as no_flag:
        score_step(step_dir, [_metric(card, None)], CPU, quiet=True)
    line = no_flag.value.one_line()
    assert "\n" not in line and first in line and "--coco-images" in line
    victim = coco_dir / sorted(p.data["coco_file"] for p in coco_sets[0])[1]
    victim.unlink()
    with pytest.raises(EvalkitError) as no_file:
        score_step(step_dir, [_metric(card, coco_dir)], CPU, quiet=True)
    line = no_file.value.one_line()
    assert "\n" not in line and victim.name in line and "--coco-images" in line and str(coco_dir) in line
