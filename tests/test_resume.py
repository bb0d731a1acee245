"""A killed run resumes to exactly the images of an uninterrupted one; damaged files are redone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from support import image_files, manifest_hashes

from evalkit.stepdir import StepDir


def _generate_cmd(sd_dir, out, prompts_file):
    return [sys.executable, "-m", "evalkit.cli", "generate", str(sd_dir), "--out", str(out), "--prompts",
            str(prompts_file), "--steps", "3", "--batch-size", "1", "--quiet"]


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("".join(f"a photo of thing number {i}\n" for i in range(24)))
    return path


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(sd_dir, tmp_path, prompts_file):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    subprocess.run(_generate_cmd(sd_dir, reference, prompts_file), check=True, env=env, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_generate_cmd(sd_dir, killed, prompts_file), env=env)
    step_dir = killed / "tiny-sd" / "final"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if len(StepDir(step_dir).read_manifest()) >= 5 if step_dir.is_dir() else False:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(StepDir(step_dir).read_manifest())
    assert 5 <= done_before < 24
    subprocess.run(_generate_cmd(sd_dir, killed, prompts_file), check=True, env=env, timeout=300)
    assert manifest_hashes(step_dir) == manifest_hashes(reference / "tiny-sd" / "final")
    assert len(manifest_hashes(step_dir)) == 24
    assert image_files(step_dir).keys() == image_files(reference / "tiny-sd" / "final").keys()
    assert not list(step_dir.rglob("*.tmp"))


def test_rerun_reuses_good_images_and_redoes_damaged_ones(sd_dir, small_sets, generate, tmp_path):
    out = tmp_path / "o"
    first = generate(sd_dir, small_sets, out=out)[0]
    hashes = manifest_hashes(first.step_dir)
    files = image_files(first.step_dir)
    names = sorted(files)
    files[names[0]].write_bytes(b"corrupt")
    files[names[1]].unlink()
    (first.step_dir / "images" / "tifa-v1.0" / ".x.png.123.tmp").write_bytes(b"half")
    again = generate(sd_dir, small_sets, out=out)[0]
    assert (again.generated, again.reused) == (2, 7)
    assert manifest_hashes(again.step_dir) == hashes
    assert not list(again.step_dir.rglob("*.tmp"))
    third = generate(sd_dir, small_sets, out=out)[0]
    assert (third.generated, third.reused) == (0, 9)


def test_torn_manifest_line_is_ignored_and_sealed(sd_dir, small_sets, generate, tmp_path):
    out = tmp_path / "o"
    first = generate(sd_dir, small_sets, out=out)[0]
    manifest = first.step_dir / "manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(lines[:-1]) + lines[-1][:20])  # killed mid-append
    again = generate(sd_dir, small_sets, out=out)[0]
    assert (again.generated, again.reused) == (1, 8)
    assert len(StepDir(first.step_dir).read_manifest()) == 9


def test_changed_prompt_text_regenerates_that_image(sd_dir, generate, tmp_path):
    from evalkit.prompts.sets import load_prompt_set

    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "text": "a red cube"}\n{"id": "b", "text": "a blue ball"}\n')
    out = tmp_path / "o"
    generate(sd_dir, [load_prompt_set(path)], out=out)
    path.write_text('{"id": "a", "text": "a red cube"}\n{"id": "b", "text": "a green ball"}\n')
    again = generate(sd_dir, [load_prompt_set(path)], out=out)[0]
    assert (again.generated, again.reused) == (1, 1)


def test_auto_batch_backs_off_on_out_of_memory(sd_dir, small_sets, generate, tmp_path):
    from diffusers import UNet2DConditionModel

    seen: list[int] = []

    def limited_memory(module, args):
        seen.append(args[0].shape[0])
        if args[0].shape[0] > 4:  # CFG doubles the batch: more than 2 samples "do not fit"
            raise torch.OutOfMemoryError("CUDA out of memory (simulated by the test)")

    original = UNet2DConditionModel.forward

    def forward(self, sample, *args, **kwargs):
        limited_memory(self, (sample,))
        return original(self, sample, *args, **kwargs)

    UNet2DConditionModel.forward = forward
    try:
        auto = generate(sd_dir, small_sets, out=tmp_path / "auto", auto_batch=True)[0]
        with pytest.raises(Exception, match="out of memory at batch size 4"):
            generate(sd_dir, small_sets, out=tmp_path / "fixed", batch_size=4)
    finally:
        UNet2DConditionModel.forward = original
    assert auto.batch_size == 2 and auto.generated == 9
    assert seen[0] == 10 and 4 in seen  # batch 8 cut at the end of the 5 tifa prompts (CFG doubles it)
    plain = generate(sd_dir, small_sets, out=tmp_path / "plain", batch_size=2)[0]
    assert manifest_hashes(auto.step_dir) == manifest_hashes(plain.step_dir)
