"""The seeding contract: a sample's image does not depend on batching, sharding or reruns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import assert_images_close, image_files, manifest_hashes

from evalkit.generation.checkpoints import ResolveOptions, resolve
from evalkit.generation.embeddings import EmbeddingStore
from evalkit.generation.generator import configure, plan_samples, render
from evalkit.generation.loading import PipelineLoader
from evalkit.generation.protocol import GenerationRequest
from evalkit.generation.seeding import sample_seed


def test_sample_seed_depends_on_every_part_and_nothing_else():
    base = sample_seed(0, "tifa-v1.0", "coco_1", 0)
    assert base == sample_seed(0, "tifa-v1.0", "coco_1", 0)
    others = {sample_seed(1, "tifa-v1.0", "coco_1", 0), sample_seed(0, "coco-10k", "coco_1", 0),
              sample_seed(0, "tifa-v1.0", "coco_2", 0), sample_seed(0, "tifa-v1.0", "coco_1", 1)}
    assert base not in others and len(others) == 4
    assert 0 <= base < 2**63


def test_batch_of_one_equals_batch_of_eight_before_quantisation(sd_dir, small_sets):
    request = GenerationRequest(steps=4)
    loaded = PipelineLoader(torch.device("cpu"), torch.float32).load(resolve(str(sd_dir), ResolveOptions())[0])
    protocol = configure(loaded, request)
    samples = plan_samples(small_sets, request)[:8]
    by_name = {s.name: s for s in small_sets}
    store = EmbeddingStore()
    together = render(loaded, protocol, samples, by_name, store)
    alone = torch.cat([render(loaded, protocol, [s], by_name, store) for s in samples])
    assert together.shape == (8, 3, 32, 32)
    assert float((together - alone).abs().max()) <= 1e-5
    # and the images differ between samples (the seeds and prompts matter)
    assert float((together[0] - together[1]).abs().max()) > 0.05


def test_png_images_agree_across_batch_sizes(generate, sd_dir, small_sets, tmp_path):
    one = generate(sd_dir, small_sets, out=tmp_path / "b1", batch_size=1)[0]
    eight = generate(sd_dir, small_sets, out=tmp_path / "b8", batch_size=8)[0]
    files_one, files_eight = image_files(one.step_dir), image_files(eight.step_dir)
    assert files_one.keys() == files_eight.keys() and len(files_one) == 9
    for name in files_one:
        assert_images_close(files_one[name], files_eight[name])


def test_two_shards_equal_one_run(generate, sd_dir, small_sets, tmp_path):
    whole = generate(sd_dir, small_sets, out=tmp_path / "whole")[0]
    shard_dir = tmp_path / "sharded"
    first = generate(sd_dir, small_sets, out=shard_dir, shard=(0, 2))[0]
    second = generate(sd_dir, small_sets, out=shard_dir, shard=(1, 2))[0]
    assert first.step_dir == second.step_dir
    assert first.generated + second.generated == whole.generated == 9
    assert sorted(p.name for p in shard_dir.rglob("manifest*.jsonl")) == [
        "manifest.shard-0-of-2.jsonl", "manifest.shard-1-of-2.jsonl"]
    sharded_files, whole_files = image_files(first.step_dir), image_files(whole.step_dir)
    assert sharded_files.keys() == whole_files.keys()
    assert manifest_hashes(first.step_dir).keys() == manifest_hashes(whole.step_dir).keys()
    for name in whole_files:
        assert_images_close(whole_files[name], sharded_files[name])


def test_two_identical_runs_are_bit_identical(generate, sd_dir, small_sets, tmp_path):
    a = generate(sd_dir, small_sets, out=tmp_path / "a")[0]
    b = generate(sd_dir, small_sets, out=tmp_path / "b")[0]
    hashes_a, hashes_b = manifest_hashes(a.step_dir), manifest_hashes(b.step_dir)
    assert len(hashes_a) == 9 and hashes_a == hashes_b
    for name, path in image_files(a.step_dir).items():
        assert path.read_bytes() == (b.step_dir / name).read_bytes()


@pytest.mark.slow
def test_torchrun_ranks_shard_the_work(sd_dir, small_sets, generate, tmp_path):
    """Under torchrun each rank takes its shard from RANK/WORLD_SIZE; the union is one run. (Shards
    take whole blocks of 32 samples, `evalkit score`'s batch: 40 prompts give both ranks work.)"""
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"a photo of thing number {i}\n" for i in range(40)))
    out = tmp_path / "torchrun"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "evalkit.cli", "generate", str(sd_dir),
           "--prompts", str(prompts), "--out", str(out), "--steps", "4", "--batch-size", "4", "--quiet"]
    subprocess.run(cmd, check=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   stdout=subprocess.DEVNULL)
    step_dir = out / "tiny-sd" / "final"
    assert sorted(p.name for p in step_dir.glob("manifest*.jsonl")) == [
        "manifest.shard-0-of-2.jsonl", "manifest.shard-1-of-2.jsonl"]
    from evalkit.prompts.sets import load_prompt_set

    single = generate(sd_dir, [load_prompt_set(prompts)], out=tmp_path / "single")[0]
    assert manifest_hashes(step_dir).keys() == manifest_hashes(single.step_dir).keys()
    for name, path in image_files(single.step_dir).items():
        assert_images_close(path, step_dir / name)
