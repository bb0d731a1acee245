"""CMMD against the authors' code path (parity/ref_cmmd.py in .venv-ref: the PyTorch port's steps restated,
since neither the JAX original nor the port is a package) on the same tiny random CLIP and images; and
against the port's own modules when a checkout is given (EVALKIT_CMMD_PORT=path/to/cmmd-pytorch).

Real side: JPEGs of assorted shapes named as COCO val2014 files (the reference's square crop and resize
matter there); generated side: square PNGs. evalkit embeds both through the metric (the reference side
through its cached COCO reference). Compared: the normalised embeddings (≤ 1e-5), the MMD on identical
float64 embeddings (≤ 1e-9 relative: the formula), and the value against the reference's float32 one
(within its float32 rounding, measured in docs/metrics.md).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from support import parity_marks, run_reference

from evalkit.metrics.api import ImageItem
from evalkit.metrics.cmmd import mmd
from evalkit.metrics.context import MetricContext
from evalkit.metrics.registry import create
from evalkit.prompts.sets import Prompt
from evalkit.tiny.clip import write_card, write_tiny_cmmd

pytestmark = parity_marks()

REAL_SIZES = [(48, 40), (40, 57), (32, 32), (70, 33), (45, 45), (64, 50), (37, 61), (50, 50)]
N_FAKE = len(REAL_SIZES)  # one generated image per prompt, each prompt naming its COCO image


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity-cmmd")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp / "cache"))  # the reference embeddings stay in the sandbox
        return _compare(tmp)


def _compare(tmp):
    clip = write_tiny_cmmd(tmp / "clip", seed=4)
    rng = np.random.default_rng(8)
    coco = tmp / "coco"
    coco.mkdir()
    real, names = [], []
    for i, (w, h) in enumerate(REAL_SIZES):
        ramp = np.linspace(0, 120, w)[None, :, None]
        pixels = np.clip(rng.integers(0, 256, (1, 1, 3)) * 0.5 + ramp + rng.normal(0, 50, (h, w, 3)), 0, 255)
        names.append(f"COCO_val2014_{i:012d}.jpg")
        Image.fromarray(pixels.astype(np.uint8)).save(coco / names[-1], quality=90)
        real.append(str(coco / names[-1]))
    fake = []
    for i in range(N_FAKE):
        path = tmp / f"fake-{i}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        fake.append(str(path))
    spec = {"clip": str(clip), "real": real, "fake": fake, "batch_size": 3}
    if os.environ.get("EVALKIT_CMMD_PORT"):
        spec["port"] = os.environ["EVALKIT_CMMD_PORT"]
    reference = run_reference("ref_cmmd", spec, tmp)
    card = write_card(tmp / "cmmd-tiny.yaml", "cmmd-tiny", "cmmd", "coco-10k", {"clip": clip},
                      params={"sigma": 10.0, "scale": 1000.0}, higher_is_better=False)
    metric = create(str(card), MetricContext(coco_images=coco))
    metric.setup(torch.device("cpu"))
    items, prepared = [], []
    for k, path in enumerate(fake):
        item = ImageItem("coco-10k", Prompt(str(k), "a caption", data={"coco_file": names[k]}), 0, path, tmp / path, "")
        with Image.open(path) as image:
            prepared.append(metric.prepare(item, image.convert("RGB")))
        items.append(item)
    records = [r[0] for r in metric.score_batch(items, prepared)]
    ours_fake = np.stack([np.frombuffer(__import__("base64").b64decode(r["features"]), "<f4") for r in records])
    _, ours_real = metric.reference(names)
    return reference, ours_real, ours_fake, metric, records


def test_embeddings_equal_the_reference(compared):
    reference, ours_real, ours_fake, _, _ = compared
    assert np.abs(ours_real - np.array(reference["restated"]["real"])).max() <= 1e-5
    assert np.abs(ours_fake - np.array(reference["restated"]["fake"])).max() <= 1e-5


def test_mmd_equals_the_reference_formula(compared):
    reference, _, _, _, _ = compared
    real = np.array(reference["restated"]["real"], dtype=np.float64)
    fake = np.array(reference["restated"]["fake"], dtype=np.float64)
    assert mmd(real, fake) == pytest.approx(reference["restated"]["cmmd_float64"], rel=1e-9)


def test_value_equals_the_reference_value(compared):
    reference, _, _, metric, records = compared
    value = metric.aggregate(records)["value"]
    assert value == pytest.approx(reference["restated"]["cmmd_float64"], abs=1e-5)
    assert abs(value - reference["restated"]["cmmd_float32"]) <= 1e-3  # its float32 means: seen 1.6e-5 here


def test_the_port_itself_when_a_checkout_is_given(compared):
    reference, ours_real, ours_fake, _, _ = compared
    if "port" not in reference:
        pytest.skip("no checkout of sayakpaul/cmmd-pytorch (set EVALKIT_CMMD_PORT to compare with it)")
    port = reference["port"]
    assert np.abs(ours_real - np.array(port["real"])).max() <= 1e-5
    assert np.abs(ours_fake - np.array(port["fake"])).max() <= 1e-5
    assert port["cmmd"] == pytest.approx(reference["restated"]["cmmd_float32"], abs=1e-6)
