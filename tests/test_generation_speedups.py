"""Generation's speed-ups change no image beyond the seeding contract's tolerance.

evalkit batches prompts, runs classifier-free guidance as one forward, caches prompt embeddings
and may torch.compile the denoiser; a researcher's plain loop calls `pipe(prompt)` once per prompt
with a seeded generator. Both must give the same PNGs (issue 10: "optimised vs plain generation").
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_STEPS
from support import assert_images_close, image_files

from evalkit.errors import EvalkitError
from evalkit.generation.checkpoints import ResolveOptions, resolve
from evalkit.generation.compiling import COMPILE_MIN_IMAGES, CompilePlan
from evalkit.generation.generator import GenerateOptions, Generator, StepResult
from evalkit.generation.loading import LoadedCheckpoint
from evalkit.generation.protocol import GenerationRequest
from evalkit.prompts.sets import PromptSet
from evalkit.stepdir import StepDir


def _generate(sd_dir: Path, sets: list[PromptSet], out: Path, plan: CompilePlan,
              batch_size: int = 4) -> tuple[StepResult, LoadedCheckpoint]:
    generator = Generator(GenerationRequest(steps=FAST_STEPS),
                          GenerateOptions(out=out, batch_size=batch_size, quiet=True, compile_plan=plan))
    (ref,) = resolve(str(sd_dir), ResolveOptions())
    loaded = generator.loader.load(ref)
    return generator.run_loaded(loaded, sets), loaded


def test_evalkit_images_equal_the_plain_one_prompt_diffusers_loop(generate, sd_dir, small_sets, tmp_path):
    from diffusers import DDIMScheduler, DiffusionPipeline
    from PIL import Image

    (result,) = generate(sd_dir, small_sets, out=tmp_path / "evalkit", batch_size=8)
    rows = StepDir(result.step_dir).read_manifest()
    texts = {(s.name, p.id): p.text for s in small_sets for p in s.prompts}
    pipe = DiffusionPipeline.from_pretrained(str(sd_dir), local_files_only=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    assert len(rows) == 9
    for row in rows.values():
        image = pipe(prompt=texts[(row.prompt_set, row.prompt_id)], num_inference_steps=FAST_STEPS,
                     guidance_scale=7.5, height=result.protocol.height, width=result.protocol.width,
                     generator=torch.Generator().manual_seed(row.seed)).images[0]
        plain = tmp_path / "plain" / row.file
        plain.parent.mkdir(parents=True, exist_ok=True)
        image.save(plain)
        assert_images_close(result.step_dir / row.file, plain)
    # and the comparison can fail: two different samples are far apart
    first, second = sorted(rows)[:2]
    apart = np.abs(np.asarray(Image.open(result.step_dir / first), np.int16)
                   - np.asarray(Image.open(result.step_dir / second), np.int16))
    assert apart.max() > 10


def test_auto_compiles_only_on_a_gpu_for_a_full_sized_checkpoint():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto = CompilePlan("auto")
    assert auto.wanted(cuda, COMPILE_MIN_IMAGES) and not auto.wanted(cuda, COMPILE_MIN_IMAGES - 1)
    assert not auto.wanted(cpu, 10 * COMPILE_MIN_IMAGES)
    assert CompilePlan("on").wanted(cpu, 1) and not CompilePlan("off").wanted(cuda, 10**6)
    assert GenerateOptions(out=Path("o"), batch_size=1).compile_plan.mode == "auto"


def _refuses(gm, example_inputs):
    raise RuntimeError("this backend compiles nothing")


def test_a_compile_failure_falls_back_to_eager_under_auto_and_is_one_line_under_on(sd_dir, small_sets, tmp_path):
    sets = small_sets[:1]
    eager, _ = _generate(sd_dir, sets, tmp_path / "eager", CompilePlan("off"))
    auto = CompilePlan("auto", backend=_refuses, auto_devices=("cpu",), auto_min_images=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fell_back, loaded = _generate(sd_dir, sets, tmp_path / "auto", auto)
    assert any("torch.compile of the denoiser failed" in str(w.message) for w in caught)
    assert fell_back.generated == 5
    for name, path in image_files(eager.step_dir).items():  # eager both times: the same bytes
        assert path.read_bytes() == (fell_back.step_dir / name).read_bytes()
    assert not any(row.compiled for row in StepDir(fell_back.step_dir).read_manifest().values())
    assert type(loaded.pipe.unet).__name__ == "UNet2DConditionModel"
    with pytest.raises(EvalkitError) as raised:
        _generate(sd_dir, sets, tmp_path / "on", CompilePlan("on", backend=_refuses))
    assert raised.value.problem.startswith("torch.compile of the denoiser failed")
    assert "--compile off" in raised.value.hint and "\n" not in raised.value.problem
    assert not image_files(tmp_path / "on" / fell_back.ref.name / fell_back.ref.step_label)


@pytest.mark.slow
def test_the_compiled_denoiser_matches_eager_and_the_pipeline_gets_its_own_back(sd_dir, small_sets, tmp_path):
    """inductor for real (cold, ~1.5 min on 2 cores): one batch of the 5 samples of one set."""
    sets = small_sets[:1]
    eager, _ = _generate(sd_dir, sets, tmp_path / "eager", CompilePlan("off"), batch_size=5)
    compiled, loaded = _generate(sd_dir, sets, tmp_path / "compiled", CompilePlan("on"), batch_size=5)
    rows = StepDir(compiled.step_dir).read_manifest()
    assert len(rows) == 5 and all(row.compiled for row in rows.values())
    for name, path in image_files(eager.step_dir).items():
        assert_images_close(path, compiled.step_dir / name)
    assert type(loaded.pipe.unet).__name__ == "UNet2DConditionModel"  # not torch's OptimizedModule
