"""PRDC on FID's features: borrowed records (one Inception pass), values from FID's cached reference,
resampling, refusals. Parity with the reference packages is tests/test_parity_prdc.py.

A real tiny step folder (4 coco-10k prompts × 2 images) and random Inception weights, as test_fid.py;
k is lowered in the card (pr_k 2, dc_k 3) so 8 generated and 4 reference images have neighbours.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.metrics import fid_stats
from evalkit.metrics.context import MetricContext
from evalkit.metrics.prdc import PRDC, Neighbourhoods, prdc_values
from evalkit.metrics.registry import create
from evalkit.scoring.engine import score_step
from evalkit.tiny.clip import write_card
from evalkit.tiny.fid import write_random_inception, write_synthetic_coco

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_random_inception(tmp_path_factory.mktemp("inception") / "inception-random.pth")


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def step_dir(generate, sd_dir, small_sets, tmp_path):
    return generate(sd_dir, [small_sets[1]], out=tmp_path / "run", images_per_prompt=2)[0].step_dir


@pytest.fixture
def coco_dir(tmp_path, small_sets):
    return write_synthetic_coco(tmp_path / "coco", small_sets[1])


def _cards(tmp_path: Path, weights: Path, **params) -> tuple[Path, Path]:
    fid = write_card(tmp_path / "fid-tiny.yaml", "fid-tiny", "fid", "coco-10k", {},
                     params={"resize": "tf1-bilinear", "weights": str(weights), "n": 8, "kid_subsets": 2,
                             "kid_subset_size": 2}, higher_is_better=False)
    prdc = write_card(tmp_path / "prdc-tiny.yaml", "prdc-tiny", "prdc", "coco-10k", {},
                      params={"features": str(fid), "pr_k": 2, "dc_k": 3, "bootstrap_resamples": 20, **params})
    return fid, prdc


def _rows(step_dir: Path, metric: str) -> list[dict]:
    files = sorted((step_dir / "scores" / metric).glob("*.jsonl"))
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines()]


def test_prdc_borrows_fids_records_and_runs_no_second_inception_pass(step_dir, coco_dir, weights, tmp_path):
    fid_card, prdc_card = _cards(tmp_path, weights)
    context = MetricContext(coco_images=coco_dir)
    prdc, fid = create(str(prdc_card), context), create(str(fid_card), context)
    assert isinstance(prdc, PRDC)
    results = score_step(step_dir, [prdc, fid], CPU, quiet=True)  # PRDC named first: FID still scores first
    assert [r.metric for r in results] == ["prdc-tiny", "fid-tiny"]
    assert prdc.fid._model is None  # its own extractor was never loaded: every record was FID's
    fid_rows, prdc_rows = _rows(step_dir, "fid-tiny"), _rows(step_dir, "prdc-tiny")
    assert len(fid_rows) == 8
    assert [r["records"] for r in prdc_rows] == [r["records"] for r in fid_rows]

    values = results[0].values
    fake = np.stack([fid_stats.decode_features(r["records"][0]["features"]) for r in fid_rows])
    real = fid_stats.load_reference(values["reference"])["features"]
    assert real.shape[0] == values["n_ref"] == 4
    expected = prdc_values(real, fake, pr_k=2, dc_k=3)
    assert {k: values[k] for k in expected} == expected
    assert values["value"] == values["precision"]
    assert results[1].values["reference"] == values["reference"]  # one cached reference for FID and PRDC


def test_prdc_alone_extracts_the_same_records_as_fid(step_dir, coco_dir, weights, tmp_path):
    fid_card, prdc_card = _cards(tmp_path, weights, value="coverage")
    context = MetricContext(coco_images=coco_dir)
    alone = score_step(step_dir, [create(str(prdc_card), context)], CPU, quiet=True)[0]
    assert alone.scored == 8
    score_step(step_dir, [create(str(fid_card), context)], CPU, quiet=True)
    assert [r["records"] for r in _rows(step_dir, "prdc-tiny")] == [r["records"] for r in _rows(step_dir, "fid-tiny")]
    assert alone.values["value"] == alone.values["coverage"]


def test_resamples_of_per_image_values_are_their_means():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(60, 8)), rng.normal(0.2, 1.1, size=(50, 8))
    hoods = Neighbourhoods.of(real, fake, 3, 5)
    rows = rng.integers(0, 50, 50)
    for name in ("precision", "density"):  # the precomputed per-image shortcut equals a full recomputation
        assert hoods.statistic(name)(rows) == pytest.approx(hoods.values(rows)[name], abs=1e-12)
    everything = np.arange(50)
    for name in ("precision", "recall", "density", "coverage"):
        assert hoods.statistic(name)(everything) == pytest.approx(hoods.values()[name], abs=1e-12)


def test_identical_sets_score_full_precision_recall_and_coverage():
    features = np.random.default_rng(4).normal(size=(40, 6))
    values = prdc_values(features, features.copy())
    assert values["precision"] == values["recall"] == values["coverage"] == 1.0
    # each reference ball holds its centre and its 4 nearest (the 5th is on the radius; strict <): 5 of 40 each
    assert values["density"] == pytest.approx(1.0, abs=1e-12)


def test_too_few_images_are_nan_or_one_line(tmp_path, weights):
    _, prdc_card = _cards(tmp_path, weights)
    metric = create(str(prdc_card))
    assert math.isnan(metric.aggregate([])["value"])
    with pytest.raises(EvalkitError, match="needs more than 5 images"):
        prdc_values(np.zeros((5, 3)), np.zeros((9, 3)))


def test_bad_cards_are_refused_in_one_line(tmp_path, weights):
    fid_card, _ = _cards(tmp_path, weights)
    with pytest.raises(EvalkitError, match="unknown value 'f1'"):
        create(str(_cards(tmp_path, weights, value="f1")[1]))
    clip = write_card(tmp_path / "clip-x.yaml", "clip-x", "clip_score", "coco-10k", {"clip": str(tmp_path)})
    with pytest.raises(EvalkitError, match="not an FID card"):
        create(str(_cards(tmp_path, weights, features=str(clip))[1]))
    assert fid_card.is_file()
