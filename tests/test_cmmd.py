"""CMMD through the scoring engine on a real tiny step folder: records, the cached COCO reference, the
prompt-bootstrap statistic, refusals. Parity with the authors' code is tests/test_parity_cmmd.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.metrics.cmmd import mmd
from evalkit.metrics.context import MetricContext
from evalkit.metrics.registry import create
from evalkit.scoring.engine import score_step
from evalkit.tiny.clip import write_card, write_tiny_cmmd
from evalkit.tiny.fid import write_synthetic_coco

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "evalkit" / "fid-refs"


@pytest.fixture
def card(tmp_path):
    clip = write_tiny_cmmd(tmp_path / "clip")
    return write_card(tmp_path / "cmmd-tiny.yaml", "cmmd-tiny", "cmmd", "coco-10k", {"clip": clip},
                      params={"bootstrap_resamples": 20}, higher_is_better=False)


def test_cmmd_scores_a_step_and_reuses_its_cached_reference(generate, sd_dir, small_sets, tmp_path, card,
                                                            cache_home):
    step_dir = generate(sd_dir, [small_sets[1]], out=tmp_path / "run", images_per_prompt=2)[0].step_dir
    coco = write_synthetic_coco(tmp_path / "coco", small_sets[1])
    first = score_step(step_dir, [create(str(card), MetricContext(coco_images=coco))], CPU, quiet=True)[0]
    assert first.n_images == 8 and first.values["n_ref"] == 4 and first.values["value"] > 0
    assert len(list(cache_home.glob("*.npz"))) == 1
    second = score_step(step_dir, [create(str(card))], CPU, quiet=True)[0]  # no --coco-images: the cache
    assert (second.scored, second.values["value"]) == (0, first.values["value"])

    metric = create(str(card))
    from evalkit.results.units import prompt_groups

    groups = prompt_groups(step_dir, "cmmd-tiny", first.fingerprint, "coco-10k")
    statistic = metric.resampler(groups.groups)
    assert statistic(np.arange(len(groups.groups))) == pytest.approx(first.values["value"], rel=1e-9)
    assert statistic(np.array([0, 0, 1, 3])) != pytest.approx(first.values["value"], rel=1e-6)


def test_mmd_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    x = np.random.default_rng(0).normal(size=(50, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert mmd(x, x) == pytest.approx(0.0, abs=1e-9)
    assert 0 < mmd(x, x + 0.05) < mmd(x, x + 0.2)


def test_without_coco_images_or_cache_it_is_one_line(generate, sd_dir, small_sets, card):
    metric = create(str(card))
    with pytest.raises(EvalkitError, match="CMMD needs the COCO val2014 images"):
        metric.preflight(small_sets[1])
    assert math.isnan(metric.aggregate([])["value"])
