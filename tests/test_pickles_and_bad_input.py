"""Bad input gets one clear line, a non-zero exit, and nothing half-written; pickles are refused."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from ldm_export import ldm_state_dict

from evalkit.errors import EXIT_USAGE, EvalkitError
from evalkit.generation.checkpoints import ResolveOptions, resolve


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


class _Exploit:
    """A pickle that would run code if unpickled without weights_only."""

    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickled_single_file_is_refused_by_default(tmp_path, sd_dir, cli):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}}, path)
    code, _, err = cli("generate", str(path), "--base", str(sd_dir), "--out", str(tmp_path / "out"))
    assert code == EXIT_USAGE
    line = _one_line(err)
    assert "pickled checkpoint" in line and "--allow-pickle" in line
    assert not (tmp_path / "out").exists()


def test_allow_pickle_loads_weights_only(tmp_path, sd_dir, small_sets, generate):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(sd_dir))
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": ldm_state_dict(pipe)}, ckpt)
    result = generate(ckpt, small_sets[:1], allow_pickle=True,
                      resolve_options=ResolveOptions(base=str(sd_dir), allow_pickle=True))[0]
    assert result.generated == 5


def test_allow_pickle_still_never_runs_code(tmp_path, sd_dir, small_sets, generate, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"state_dict": _Exploit()}))
    with pytest.raises(EvalkitError, match="could not read checkpoint"):
        generate(path, small_sets[:1], allow_pickle=True,
                 resolve_options=ResolveOptions(base=str(sd_dir), allow_pickle=True))
    assert not (tmp_path / "PWNED").exists()


def test_training_checkpoint_with_only_pickled_weights_is_refused(tmp_path, train_dir):
    run = tmp_path / "run"
    shutil.copytree(train_dir, run)
    unet = run / "checkpoint-200" / "unet"
    state = {"w": torch.zeros(1)}
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(state, unet / "diffusion_pytorch_model.bin")
    with pytest.raises(EvalkitError, match="holds only pickled weights"):
        resolve(str(run), ResolveOptions())


def test_pipeline_with_only_pickled_weights_is_refused(tmp_path, sd_dir, small_sets, generate):
    copy = tmp_path / "pickled"
    shutil.copytree(sd_dir, copy)
    vae = copy / "vae"
    (vae / "diffusion_pytorch_model.safetensors").unlink()
    torch.save({}, vae / "diffusion_pytorch_model.bin")
    with pytest.raises(EvalkitError, match="vae holds only pickled weights"):
        generate(copy, small_sets[:1])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["generate", "/nonexistent/model"], "neither an existing file or folder nor a hub id"),
        (["generate", "{tmp}"], "neither a diffusers pipeline folder"),
        (["generate", "{sd}", "--prompts", "tifa-v2"], "tifa-v1.0"),
        (["generate", "{sd}", "--prompts", "{tmp}/prompts.txt"], "empty prompt"),
        (["generate", "{sd}", "--shard", "3/2"], "--shard '3/2' is out of range"),
        (["generate", "{sd}", "--shard", "half"], "not of the form i/N"),
        (["generate", "{sd}", "--batch-size", "lots"], "neither a number nor 'auto'"),
        (["generate", "{sd}", "--scheduler", "magic"], "unknown scheduler 'magic'"),
        (["generate", "{sd}", "--steps", "0"], "--steps must be at least 1"),
        (["generate", "{sd}", "--resolution", "30"], "multiple of 8"),
        (["generate", "{sd}", "--dtype", "int8"], "unknown dtype"),
        (["generate", "{sd}", "--device", "cuda"], "CUDA is not available"),
        (["generate", "{tmp}/x.txt"], "not a checkpoint file"),
        (["prompts", "show", "nope"], "unknown prompt set"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle, cli, tmp_path, sd_dir):
    (tmp_path / "prompts.txt").write_text("a cat\n\na dog\n")
    (tmp_path / "x.txt").write_text("not a model")
    argv = [a.format(tmp=tmp_path, sd=sd_dir) for a in args]
    if argv[0] == "generate":
        argv += ["--out", str(tmp_path / "out"), "--limit", "1", "--quiet"]
    code, _, err = cli(*argv)
    assert code == EXIT_USAGE, err
    assert needle in _one_line(err)
    assert not (tmp_path / "out").exists()


def test_broken_checkpoint_weights(tmp_path, train_dir, cli):
    run = tmp_path / "run"
    shutil.copytree(train_dir, run)
    weights = run / "checkpoint-200" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated download
    out = tmp_path / "out"
    code, _, err = cli("generate", str(run), "--out", str(out), "--prompts", "tifa-v1.0", "--limit", "2",
                       "--steps", "2", "--quiet")
    assert code == EXIT_USAGE
    line = _one_line(err)
    assert "could not load" in line and "checkpoint-200" in line
    # the good step before it is complete and recorded; nothing of the broken one was written
    assert (out / "run" / "100" / "generation.json").is_file()
    assert not (out / "run" / "200").exists()


def test_incomplete_checkpoint_folder(tmp_path, train_dir):
    run = tmp_path / "run"
    shutil.copytree(train_dir, run)
    (run / "checkpoint-300" / "unet" / "config.json").unlink()
    with pytest.raises(EvalkitError, match=r"incomplete: config\.json is missing"):
        resolve(str(run), ResolveOptions())


def test_ema_requested_without_ema_weights(tmp_path, train_dir):
    run = tmp_path / "run"
    shutil.copytree(train_dir, run)
    for ckpt in run.glob("checkpoint-*"):
        shutil.rmtree(ckpt / "unet_ema")
    with pytest.raises(EvalkitError, match="no unet_ema/"):
        resolve(str(run), ResolveOptions(ema=True))


def test_protocol_change_in_same_folder_is_refused(sd_dir, small_sets, generate, tmp_path):
    generate(sd_dir, small_sets[:1], out=tmp_path / "o", steps=3)
    with pytest.raises(EvalkitError, match="different protocol"):
        generate(sd_dir, small_sets[:1], out=tmp_path / "o", steps=4)


def test_unreadable_model_index(tmp_path, sd_dir):
    copy = tmp_path / "m"
    shutil.copytree(sd_dir, copy)
    (copy / "model_index.json").write_text("{not json")
    with pytest.raises(EvalkitError, match="not valid JSON"):
        resolve(str(copy), ResolveOptions())


def test_generation_record_is_json(sd_dir, small_sets, generate):
    result = generate(sd_dir, small_sets[:1])[0]
    json.loads((result.step_dir / "generation.json").read_text())


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda index, folder: index.update(_class_name=["my_pipeline", "MyPipeline"]),
     "names a custom pipeline class ['my_pipeline', 'MyPipeline']"),
    (lambda index, folder: index.update(unet=["my_unets", "FastUNet"]),
     "takes its unet from custom code (my_unets.FastUNet)"),
    (lambda index, folder: _add_auto_map(folder / "unet" / "config.json"),
     "maps its classes to custom code (auto_map)"),
])
def test_checkpoint_code_is_never_run(edit, needle, tmp_path, sd_dir, cli):
    """A pipeline that ships code of its own is refused by name before diffusers could import it."""
    folder = tmp_path / "custom"
    shutil.copytree(sd_dir, folder)
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    edit(index, folder)
    index_path.write_text(json.dumps(index), encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = cli("generate", str(folder), "--out", str(out), "--prompts", "coco-10k", "--limit", "1",
                       "--steps", "2", "--quiet")
    assert code == 2 and err.count("\n") == 1, err
    assert needle in err and "evalkit never runs code shipped with a checkpoint" in err
    assert "folder is broken" not in err
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def _add_auto_map(config) -> None:
    document = json.loads(config.read_text(encoding="utf-8"))
    document["auto_map"] = {"AutoModel": "modeling_fast.FastUNet"}
    config.write_text(json.dumps(document), encoding="utf-8")


def test_a_single_file_that_does_not_fit_its_base_is_one_line(tmp_path, sd_dir, cli):
    """A file holding only some components (or another architecture's) for this --base."""
    from safetensors.torch import save_file

    path = tmp_path / "partial.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(7, 3, 3, 3)}, str(path))
    out = tmp_path / "out"
    code, _, err = cli("generate", str(path), "--base", str(sd_dir), "--out", str(out), "--prompts", "coco-10k",
                       "--limit", "1", "--steps", "2", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "could not load single-file checkpoint" in err and "check that --base is the pipeline" in err
    assert not out.exists()
