"""Every checkpoint form generates, through the real diffusers loaders, with tiny models."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from ldm_export import export_ldm_checkpoint
from safetensors.torch import save_file
from support import image_files, manifest_hashes, png_pixels

from evalkit.errors import EvalkitError
from evalkit.generation.checkpoints import ResolveOptions, resolve


def _json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_pipeline_folder_writes_layout_manifest_and_record(generate, sd_dir, small_sets):
    result = generate(sd_dir, small_sets)[0]
    assert result.step_dir.parts[-2:] == ("tiny-sd", "final")
    files = image_files(result.step_dir)
    assert set(files) == {f"images/{s.name}/{p.id}_0.png" for s in small_sets for p in s}
    assert len(files) == 9 and result.generated == 9
    hashes = manifest_hashes(result.step_dir)
    assert set(hashes) == set(files)
    assert png_pixels(files["images/tifa-v1.0/coco_301091_0.png"]).shape == (32, 32, 3)
    record = _json(result.step_dir / "generation.json")
    protocol = record["protocol"]
    assert (protocol["scheduler"], protocol["steps"], protocol["guidance_scale"]) == ("DDIMScheduler", 4, 7.5)
    assert (protocol["height"], protocol["width"], protocol["dtype"], protocol["negative_prompt"]) == (
        32, 32, "float32", "")
    assert protocol["scheduler_config"]["beta_schedule"] == "scaled_linear"  # from the checkpoint's config
    assert record["prompt_sets"]["tifa-v1.0"]["n"] == 5
    assert record["prompt_sets"]["tifa-v1.0"]["fingerprint"] == small_sets[0].fingerprint
    assert record["provenance"]["versions"]["diffusers"]
    assert len(record["checkpoint"]["fingerprint"]) == 64


def test_protocol_defaults_are_the_studys(sd_dir, small_sets, generate):
    result = generate(sd_dir, small_sets[:1], steps=50)[0]
    protocol = result.protocol
    assert (protocol.scheduler, protocol.steps, protocol.guidance_scale, protocol.seed, protocol.eta) == (
        "DDIMScheduler", 50, 7.5, 0, 0.0)


def test_training_folder_steps_in_order_non_ema_and_shared_embeddings(train_dir, small_sets, tmp_path):
    from evalkit.generation.generator import GenerateOptions, Generator
    from evalkit.generation.protocol import GenerationRequest

    refs = resolve(str(train_dir), ResolveOptions())
    assert [r.step for r in refs] == [100, 200, 300]
    assert all(r.source.denoiser_dir.name == "unet" for r in refs)
    generator = Generator(GenerationRequest(steps=4), GenerateOptions(out=tmp_path, batch_size=4, quiet=True))
    first = generator.run_one(refs[0], small_sets)
    chunks_after_first = generator.store.computed_chunks
    assert chunks_after_first == 2  # one chunk per prompt set
    rest = [generator.run_one(r, small_sets) for r in refs[1:]]
    assert generator.store.computed_chunks == chunks_after_first  # same text encoder: embeddings reused
    step_dirs = [first.step_dir, *(r.step_dir for r in rest)]
    assert [d.name for d in step_dirs] == ["100", "200", "300"]
    fingerprints = {_json(d / "generation.json")["checkpoint"]["fingerprint"] for d in step_dirs}
    assert len(fingerprints) == 3
    image = "images/tifa-v1.0/coco_301091_0.png"
    assert not torch.equal(png_pixels(step_dirs[0] / image), png_pixels(step_dirs[2] / image))


def test_ema_flag_uses_ema_weights(train_dir, small_sets, generate, tmp_path):
    plain = generate(train_dir / "checkpoint-200", small_sets[:1], out=tmp_path / "a")[0]
    ema = generate(train_dir / "checkpoint-200", small_sets[:1], out=tmp_path / "b",
                   resolve_options=ResolveOptions(ema=True))[0]
    assert plain.step_dir.parts[-2:] == ("tiny-train", "200")
    assert ema.step_dir.parts[-2:] == ("tiny-train-ema", "200")
    assert _json(ema.step_dir / "generation.json")["checkpoint"]["source"]["denoiser_folder"] == "unet_ema"
    image = "images/tifa-v1.0/coco_301091_0.png"
    assert not torch.equal(png_pixels(plain.step_dir / image), png_pixels(ema.step_dir / image))


def test_training_folder_on_explicit_base(train_dir, sd_dir, small_sets, generate, tmp_path):
    bare = tmp_path / "bare-run"
    shutil.copytree(train_dir / "checkpoint-100", bare / "checkpoint-100")
    with pytest.raises(EvalkitError, match="needs a base pipeline"):
        resolve(str(bare), ResolveOptions())
    result = generate(bare, small_sets[:1], resolve_options=ResolveOptions(base=str(sd_dir)))[0]
    assert result.step_dir.parts[-2:] == ("bare-run", "100") and result.generated == 5


def test_ldm_single_file_matches_its_pipeline(sd_dir, small_sets, generate, tmp_path):
    from diffusers import StableDiffusionPipeline

    from evalkit.tiny.sd import build_tiny_sd

    pipe = StableDiffusionPipeline.from_pretrained(str(sd_dir))
    ckpt = tmp_path / "tiny-sd.safetensors"
    export_ldm_checkpoint(pipe, ckpt)
    other_base = tmp_path / "other-base"
    build_tiny_sd(seed=7).save_pretrained(str(other_base))  # same configs, different weights
    single = generate(ckpt, small_sets[:1], out=tmp_path / "single",
                      resolve_options=ResolveOptions(base=str(other_base)))[0]
    folder = generate(sd_dir, small_sets[:1], out=tmp_path / "folder")[0]
    assert single.step_dir.parts[-2:] == ("tiny-sd", "final")
    assert manifest_hashes(single.step_dir) == manifest_hashes(folder.step_dir)
    assert _json(single.step_dir / "generation.json")["checkpoint"]["source"]["layout"] == "ldm"


def test_diffusers_denoiser_single_file(sd_dir, train_dir, small_sets, generate, tmp_path):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(train_dir / "checkpoint-300" / "unet"))
    path = tmp_path / "unet-step300.safetensors"
    save_file(unet.state_dict(), str(path))
    single = generate(path, small_sets[:1], out=tmp_path / "single",
                      resolve_options=ResolveOptions(base=str(train_dir)))[0]
    step = generate(train_dir / "checkpoint-300", small_sets[:1], out=tmp_path / "step")[0]
    assert manifest_hashes(single.step_dir) == manifest_hashes(step.step_dir)


def test_single_file_needs_base(sd_dir, tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(1)}, str(path))
    with pytest.raises(EvalkitError, match="needs a base pipeline"):
        resolve(str(path), ResolveOptions())


def test_single_file_of_unknown_layout_is_refused(sd_dir, small_sets, generate, tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"something.else": torch.zeros(1)}, str(path))
    with pytest.raises(EvalkitError, match="matches neither"):
        generate(path, small_sets[:1], resolve_options=ResolveOptions(base=str(sd_dir)))


def _populate_hub_cache(hf_home, repo_id, source_dir, commit="0" * 39 + "1"):
    """Lay out a snapshot the way huggingface_hub's cache stores one."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(source_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return commit


def test_hub_id_resolves_from_the_local_cache_offline(sd_dir, small_sets, generate, tmp_path, monkeypatch):
    hf_home = tmp_path / "hf"
    commit = _populate_hub_cache(hf_home, "evalkit-test/tiny-sd", sd_dir)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    result = generate("evalkit-test/tiny-sd", small_sets[:1])[0]
    assert result.step_dir.parts[-2:] == ("evalkit-test--tiny-sd", "final")
    source = _json(result.step_dir / "generation.json")["checkpoint"]["source"]
    assert source == {"kind": "hub", "repo_id": "evalkit-test/tiny-sd", "revision": "main", "snapshot": commit}


def test_hub_id_missing_offline_is_one_clear_error(small_sets, generate, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(EvalkitError) as info:
        generate("someone/not-cached", small_sets[:1])
    assert "not in the local Hugging Face cache and offline mode is on" in info.value.problem
    assert "hf download someone/not-cached" in info.value.hint


def test_sdxl_pipeline(models, small_sets, generate):
    from evalkit.tiny.sd import build_tiny_sdxl

    path = models / "tiny-sdxl"
    build_tiny_sdxl().save_pretrained(str(path))
    result = generate(path, small_sets[:1])[0]
    assert result.protocol.family == "sdxl" and result.generated == 5


def test_pixart_pipeline(models, small_sets, generate):
    from evalkit.tiny.dit import build_tiny_pixart

    path = models / "tiny-pixart"
    build_tiny_pixart().save_pretrained(str(path))
    result = generate(path, small_sets[:1])[0]
    assert (result.protocol.family, result.protocol.scheduler) == ("pixart", "DDIMScheduler")
    assert png_pixels(result.step_dir / "images/tifa-v1.0/coco_301091_0.png").shape == (32, 32, 3)


def test_sd3_flow_matching_pipeline(models, small_sets, generate):
    from evalkit.tiny.dit import build_tiny_sd3

    path = models / "tiny-sd3"
    build_tiny_sd3().save_pretrained(str(path))
    with pytest.raises(EvalkitError, match="flow-matching pipeline; scheduler 'ddim' cannot run it"):
        generate(path, small_sets[:1])
    result = generate(path, small_sets[:1], scheduler="native")[0]
    assert (result.protocol.family, result.protocol.scheduler) == ("sd3", "FlowMatchEulerDiscreteScheduler")
    assert result.generated == 5


def test_unsupported_pipeline_is_a_clear_error(sd_dir, small_sets, generate, tmp_path):
    copy = tmp_path / "upscaler"
    shutil.copytree(sd_dir, copy)
    index = _json(copy / "model_index.json")
    index["_class_name"] = "StableDiffusionUpscalePipeline"
    (copy / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(EvalkitError, match="StableDiffusionUpscalePipeline is not supported"):
        generate(copy, small_sets[:1])
    assert not (tmp_path / "out").exists()
