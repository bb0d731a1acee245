"""`--batch-size auto` probes upward, remembers what fitted across checkpoints, and a VAE decode that runs
out of memory is redone in chunks without redoing the denoising — with the images of a plain run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from support import manifest_hashes

from evalkit.generation import fitting
from evalkit.generation.fitting import AutoRange, BatchFit
from evalkit.stepdir import StepDir

OOM = "CUDA out of memory (simulated by the test)"


def test_batch_fit_doubles_after_full_batches_halves_on_failure_and_never_retries_a_failed_size():
    fit = BatchFit(AutoRange(start=2, ceiling=16))
    fit.succeeded(2)
    assert fit.size == 4
    fit.succeeded(3)  # a batch cut short at the end of a set proves nothing about 4
    assert fit.size == 4
    fit.succeeded(4)
    assert fit.size == 8
    assert fit.ran_out(8) and fit.size == 4 and fit.failed == 8
    fit.succeeded(4)
    assert fit.size == 4  # 8 failed: not probed again
    assert fit.ran_out(3) and fit.size == 2  # half the target: smaller than the short batch that failed
    assert fit.ran_out(2) and fit.size == 1 and fit.failed == 2
    assert not BatchFit(AutoRange(1, 1)).ran_out(1)
    capped = BatchFit(AutoRange(start=16, ceiling=16))
    capped.succeeded(16)
    assert capped.size == 16


def test_cpu_is_never_probed_upward():
    limits = fitting.auto_range(torch.device("cpu"))
    assert limits.start == limits.ceiling


@pytest.fixture
def unet_limit(monkeypatch):
    """UNet forwards of more than `limit[0]` rows (CFG doubles a batch) run out of memory."""
    from diffusers import UNet2DConditionModel

    original = UNet2DConditionModel.forward
    limit, seen = [1 << 30], []

    def forward(self, sample, *args, **kwargs):
        seen.append(sample.shape[0])
        if sample.shape[0] > limit[0]:
            raise torch.OutOfMemoryError(OOM)
        return original(self, sample, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", forward)
    return limit, seen


def test_auto_batch_probes_upward_and_the_next_checkpoint_starts_where_the_first_ended(
        train_dir, generate, tmp_path, monkeypatch, unet_limit):
    from evalkit.prompts.sets import load_prompt_set

    limit, seen = unet_limit
    limit[0] = 8  # 4 samples fit (CFG doubles a batch), 8 do not
    monkeypatch.setitem(fitting.AUTO_RANGES, "cpu", AutoRange(start=1, ceiling=8))
    sets = [load_prompt_set("coco-10k").head(14)]
    results = generate(train_dir, sets, out=tmp_path / "auto", auto_batch=True, steps=2)
    tried = _batches(seen, limit[0], steps=2)
    assert [(r.batch_size, r.generated) for r in results] == [(4, 14)] * 3, tried
    assert tried[:6] == [1, 2, 4, 7, 4, 3]  # doubled until 8 (cut to the 7 left) failed, then kept at 4
    assert tried[6:] == [4, 4, 4, 2] * 2  # the later checkpoints start at 4: no probing, no failure
    plain = generate(train_dir, sets, out=tmp_path / "plain", batch_size=4, steps=2)
    for auto, fixed in zip(results, plain, strict=True):
        _assert_same_images(auto.step_dir, fixed.step_dir, max_diff=1)


def _batches(forwards: list[int], limit: int, steps: int) -> list[int]:
    """The batch sizes tried, from the UNet forwards' row counts: a batch that fitted ran `steps` forwards
    of 2 x size rows (CFG), one that failed stopped at its first."""
    tried, i = [], 0
    while i < len(forwards):
        tried.append(forwards[i] // 2)
        i += 1 if forwards[i] > limit else steps
    return tried


def _decode_limit(monkeypatch, most: int) -> list[int]:
    """AutoencoderKL.decode of more than `most` latents runs out of memory; returns the sizes it saw."""
    from diffusers import AutoencoderKL

    original = AutoencoderKL.decode
    sizes: list[int] = []

    def decode(self, z, *args, **kwargs):
        sizes.append(z.shape[0])
        if z.shape[0] > most:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
        return original(self, z, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "decode", decode)
    return sizes


@pytest.mark.parametrize("auto_batch", [False, True])
def test_out_of_memory_in_vae_decode_decodes_in_chunks_without_redoing_the_denoising(
        sd_dir, small_sets, generate, tmp_path, monkeypatch, unet_limit, auto_batch):
    _, seen = unet_limit
    plain = generate(sd_dir, small_sets, out=tmp_path / "plain", batch_size=4)[0]
    plain_forwards = len(seen)
    seen.clear()
    sizes = _decode_limit(monkeypatch, most=1)
    if auto_batch:
        monkeypatch.setitem(fitting.AUTO_RANGES, "cpu", AutoRange(start=4, ceiling=4))
    chunked = generate(sd_dir, small_sets, out=tmp_path / "chunked", batch_size=4, auto_batch=auto_batch)[0]
    assert len(seen) == plain_forwards  # no batch was denoised twice
    assert chunked.batch_size == 4 and chunked.generated == plain.generated == 9
    assert sizes[:3] == [4, 2, 1]  # halved until it fitted ...
    assert set(sizes[3:]) == {1}  # ... and later batches start at the chunk that fitted
    _assert_same_images(chunked.step_dir, plain.step_dir, max_diff=1)


def test_decode_that_fails_at_one_latent_or_with_a_bug_is_not_swallowed(sd_dir, small_sets, generate, tmp_path,
                                                                        monkeypatch):
    from diffusers import AutoencoderKL

    _decode_limit(monkeypatch, most=0)
    with pytest.raises(Exception, match="out of memory at batch size 4"):
        generate(sd_dir, small_sets, out=tmp_path / "never", batch_size=4)
    calls: list[int] = []

    def broken(self, z, *args, **kwargs):
        calls.append(z.shape[0])
        raise RuntimeError("shape mismatch: a bug")

    monkeypatch.setattr(AutoencoderKL, "decode", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        generate(sd_dir, small_sets, out=tmp_path / "bug", batch_size=4)
    assert calls == [4]  # a bug is not retried in chunks


def test_chunked_decode_leaves_the_pipeline_as_it_came(sd_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(sd_dir))
    before = pipe.vae.decode
    with fitting.chunked_decode(pipe.vae, torch.device("cpu"), BatchFit(AutoRange(2, 2))) as wrapper:
        assert pipe.vae.decode is wrapper
    assert "decode" not in vars(pipe.vae) and pipe.vae.decode == before


def _assert_same_images(a, b, max_diff: int) -> None:
    """Same files; pixels equal up to `max_diff` (the float rounding of a different conv batch)."""
    ha, hb = manifest_hashes(a), manifest_hashes(b)
    assert ha.keys() == hb.keys()
    worst = 0
    for file in ha:
        if ha[file] != hb[file]:
            x = np.asarray(Image.open(a / file), dtype=np.int16)
            y = np.asarray(Image.open(b / file), dtype=np.int16)
            worst = max(worst, int(np.abs(x - y).max()))
    assert worst <= max_diff
    assert len(StepDir(a).read_manifest()) == len(ha)
