"""evalkit.evaluate(): the CLI's code path from Python, on a path or on a pipeline object in memory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from support import manifest_hashes

import evalkit
from evalkit.errors import EvalkitError

COMMON = {"steps": 4, "batch_size": 2}  # the card scores tifa-v1.0-sample: 2 prompts


@pytest.fixture(scope="module")
def clip_card(models):
    from evalkit.tiny.clip import build_tiny_clip, write_card

    folder = models / "tiny-clip"
    if not (folder / "config.json").is_file():
        build_tiny_clip(folder)
    return write_card(models / "clip-tiny-api.yaml", "clip-tiny", "clip_score", "tifa-v1.0-sample",
                      {"clip": folder})


@pytest.fixture(scope="module")
def metric(clip_card):
    from evalkit.metrics.registry import create

    return create(str(clip_card))  # one object across calls: its model stays loaded, as in a training loop


@pytest.fixture
def pipe(sd_dir):
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(str(sd_dir), torch_dtype=torch.float32)


def test_in_memory_pipeline_and_path_give_the_same_numbers(pipe, sd_dir, metric, tmp_path):
    pipe.unet.train()  # a training loop's state must come back unchanged
    scheduler = pipe.scheduler
    memory = evalkit.evaluate(pipe, metrics=[metric], step=10, out=tmp_path / "a", name="mem", **COMMON)
    disk = evalkit.evaluate(str(sd_dir), metrics=[metric], step=10, out=tmp_path / "b", curves=False, **COMMON)
    assert memory.values == disk.values and set(memory.values) == {"clip-tiny"}
    assert memory.run.metrics["clip-tiny"].ci95 == disk.run.metrics["clip-tiny"].ci95
    assert manifest_hashes(memory.step_dir) == manifest_hashes(disk.step_dir)  # the same images, byte for byte
    assert memory.run.protocol.fingerprint == disk.run.protocol.fingerprint
    assert memory.run.checkpoint.source["kind"] == "in_memory" and memory.step_dir.name == "10"
    assert pipe.unet.training and pipe.scheduler is scheduler
    assert [p.name for p in memory.curves] == ["clip-tiny.csv", "clip-tiny.json", "clip-tiny.png", "clip-tiny.svg"]


def test_covered_step_is_skipped_and_a_new_protocol_starts_a_new_series(pipe, metric, tmp_path, monkeypatch):
    first = evalkit.evaluate(pipe, metrics=[metric], step=1, out=tmp_path, name="loop", **COMMON)
    assert not first.skipped

    from evalkit.generation.generator import Generator

    def no_generation(*args, **kwargs):
        raise AssertionError("a covered step must not be generated again")

    with monkeypatch.context() as patched:
        patched.setattr(Generator, "run_one", no_generation)
        again = evalkit.evaluate(pipe, metrics=[metric], step=1, out=tmp_path, name="loop", **COMMON)
    assert again.skipped and again.values == first.values

    later = evalkit.evaluate(pipe, metrics=[metric], step=2, out=tmp_path, name="loop", guidance_scale=3.0,
                             flops_per_step=1e12, **COMMON)
    record = json.loads((tmp_path / "loop" / "curves" / "clip-tiny.json").read_text())
    assert [[p["step"] for p in s["points"]] for s in record["series"]] == [[2], [1]]  # newest series first
    assert record["compute"]["flops_per_step"] == 10**12
    assert later.run.protocol.guidance_scale == 3.0


def test_in_memory_fingerprint_is_deterministic_and_tracks_the_weights(pipe, sd_dir):
    from diffusers import DiffusionPipeline

    from evalkit.generation.inmemory import pipeline_fingerprints

    weights, text = pipeline_fingerprints(pipe)
    assert pipeline_fingerprints(pipe) == (weights, text)
    other = DiffusionPipeline.from_pretrained(str(sd_dir), torch_dtype=torch.float32)
    assert pipeline_fingerprints(other) == (weights, text)
    with torch.no_grad():
        next(other.unet.parameters()).add_(1e-3)
    changed, same_text = pipeline_fingerprints(other)
    assert changed != weights and same_text == text


def test_bad_arguments_are_one_line_errors(pipe, sd_dir, train_dir, metric, tmp_path):
    with pytest.raises(EvalkitError, match="unknown protocol setting"):
        evalkit.evaluate(pipe, metrics=[metric], out=tmp_path, cfg=3.0)
    with pytest.raises(EvalkitError, match=r"given for a pipeline in torch\.float32"):
        evalkit.evaluate(pipe, metrics=[metric], out=tmp_path, dtype="bfloat16")  # it runs as it is
    with pytest.raises(EvalkitError, match="holds 3 checkpoints"):
        evalkit.evaluate(str(train_dir), metrics=[metric], out=tmp_path)
    with pytest.raises(EvalkitError, match="no checkpoint-7"):
        evalkit.evaluate(str(train_dir), metrics=[metric], out=tmp_path, step=7)


def test_import_evalkit_stays_light():
    code = "import sys, evalkit; assert 'torch' not in sys.modules and 'evaluate' in dir(evalkit)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert evalkit.evaluate is evalkit.evaluation.evaluator.evaluate  # resolved on first use
    with pytest.raises(AttributeError):
        evalkit.no_such_thing  # noqa: B018
