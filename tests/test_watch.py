"""Watch mode: only complete, settled checkpoints are evaluated; a bad one is retried, not fatal."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from evalkit.evaluation.watch import CheckpointWatcher, WatchOptions, incomplete_reason, watch


def test_incomplete_reasons(tmp_path):
    ckpt = tmp_path / "checkpoint-5"
    ckpt.mkdir()
    assert "no unet or transformer folder" in incomplete_reason(ckpt)
    (ckpt / "unet").mkdir()
    assert "config.json is missing" in incomplete_reason(ckpt)
    (ckpt / "unet" / "config.json").write_text("{}")
    assert "no weights file" in incomplete_reason(ckpt)
    index = {"weight_map": {"a": "model-00001.safetensors", "b": "model-00002.safetensors"}}
    (ckpt / "unet" / "model.safetensors.index.json").write_text(json.dumps(index))
    (ckpt / "unet" / "model-00001.safetensors").write_bytes(b"x")
    assert "model-00002.safetensors" in incomplete_reason(ckpt)
    (ckpt / "unet" / "model-00002.safetensors").write_bytes(b"x")
    assert incomplete_reason(ckpt) == ""
    (ckpt / ".optimizer.bin.1234.tmp").write_bytes(b"")
    assert "still being written" in incomplete_reason(ckpt)
    (ckpt / ".optimizer.bin.1234.tmp").unlink()
    assert "unet_ema" in incomplete_reason(ckpt, ema=True)


def _complete(ckpt: Path) -> None:
    (ckpt / "unet").mkdir(parents=True, exist_ok=True)
    (ckpt / "unet" / "config.json").write_text("{}")
    (ckpt / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")


def test_a_checkpoint_is_ready_once_its_files_stop_changing(tmp_path):
    now = [time.time()]
    watcher = CheckpointWatcher(tmp_path, settle_seconds=60, clock=lambda: now[0])
    _complete(tmp_path / "checkpoint-10")
    assert list(watcher.ready()) == []  # first sight, files just written: wait one poll
    (tmp_path / "checkpoint-10" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights, more")
    assert list(watcher.ready()) == []  # it changed since the last poll
    assert [s for s, _ in watcher.ready()] == [10]  # unchanged across two polls
    watcher.mark_done(10)
    assert list(watcher.ready()) == []
    # A watcher started after training sees old, untouched checkpoints as settled at once.
    _complete(tmp_path / "checkpoint-20")
    later = CheckpointWatcher(tmp_path, settle_seconds=60, clock=lambda: now[0] + 120)
    assert [s for s, _ in later.ready()] == [10, 20]


def test_watch_retries_a_failing_checkpoint_and_stops_on_the_stop_file(tmp_path):
    _complete(tmp_path / "checkpoint-1")
    _complete(tmp_path / "checkpoint-2")
    watcher = CheckpointWatcher(tmp_path, settle_seconds=0)
    calls, warnings = [], []

    def evaluate(step, path):
        calls.append(step)
        if step == 2 and calls.count(2) == 1:
            raise RuntimeError("truncated file\nsecond line")
        if calls.count(2) == 2:
            (tmp_path / "STOP").write_text("")

    polls = watch(watcher, evaluate, WatchOptions(poll_seconds=5), warnings.append, sleep=lambda s: None)
    assert calls == [1, 2, 2] and polls == 2
    assert warnings == ["warning: checkpoint-2 could not be evaluated (RuntimeError: truncated file); "
                        "retrying on the next poll"]
    assert watch(watcher, evaluate, WatchOptions(poll_seconds=5), warnings.append) == 0  # STOP still there
    (tmp_path / "STOP").unlink()
    assert watch(watcher, evaluate, WatchOptions(poll_seconds=5, max_polls=3), warnings.append,
                 sleep=lambda s: None) == 3


@pytest.fixture(scope="module")
def clip_card(models):
    from evalkit.tiny.clip import build_tiny_clip, write_card

    folder = models / "tiny-clip"
    if not (folder / "config.json").is_file():
        build_tiny_clip(folder)
    return write_card(models / "clip-tiny-watch.yaml", "clip-tiny", "clip_score", "tifa-v1.0-sample",
                      {"clip": folder})


def _wait_for(condition, seconds=120.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_watched_training_folder(train_dir, clip_card, tmp_path):
    """A checkpoint written half-way is left alone; once complete it is evaluated; a broken one is
    retried with a warning until it is fixed."""
    from evalkit.evaluation.evaluator import Evaluator, watch_folder
    from evalkit.generation.checkpoints import ResolveOptions
    from evalkit.generation.generator import GenerateOptions
    from evalkit.generation.protocol import GenerationRequest
    from evalkit.metrics.registry import create
    from evalkit.prompts.sets import load_prompt_set

    train = tmp_path / "train"
    shutil.copytree(train_dir, train, ignore=shutil.ignore_patterns("checkpoint-200", "checkpoint-300"))
    out = tmp_path / "out"
    evaluator = Evaluator(GenerationRequest(steps=4), GenerateOptions(out=out, batch_size=2, quiet=True),
                          [create(str(clip_card))], [load_prompt_set("tifa-v1.0-sample")])
    lines, warnings, errors = [], [], []

    def run():
        try:
            watch_folder(evaluator, train, ResolveOptions(), WatchOptions(poll_seconds=0.2), echo=lines.append,
                         warn=warnings.append)
        except BaseException as e:  # surfaced to the test thread below
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert _wait_for(lambda: (out / "train" / "100" / "run.json").is_file()), (lines, warnings, errors)
        source = train_dir / "checkpoint-200" / "unet"
        half = train / "checkpoint-200" / "unet"
        half.mkdir(parents=True)
        shutil.copyfile(source / "config.json", half / "config.json")  # config written, weights not yet
        time.sleep(1.5)  # several polls
        assert not (out / "train" / "200").exists() and not warnings
        shutil.copyfile(source / "diffusion_pytorch_model.safetensors", half / "diffusion_pytorch_model.safetensors")
        assert _wait_for(lambda: (out / "train" / "200" / "run.json").is_file()), (lines, warnings, errors)

        broken = train / "checkpoint-300" / "unet"
        broken.mkdir(parents=True)
        shutil.copyfile(source / "config.json", broken / "config.json")
        (broken / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
        assert _wait_for(lambda: len(warnings) >= 2), (lines, warnings, errors)  # retried, still alive
        assert all(w.startswith("warning: checkpoint-300 could not be evaluated") and "\n" not in w
                   for w in warnings)
        shutil.copyfile(train_dir / "checkpoint-300" / "unet" / "diffusion_pytorch_model.safetensors",
                        broken / "diffusion_pytorch_model.safetensors")
        assert _wait_for(lambda: (out / "train" / "300" / "run.json").is_file()), (lines, warnings, errors)
    finally:
        (train / "STOP").write_text("")
        thread.join(timeout=60)
    assert not thread.is_alive() and not errors
    record = json.loads((out / "train" / "curves" / "clip-tiny.json").read_text())
    assert [p["step"] for p in record["series"][0]["points"]] == [100, 200, 300]


def test_watch_cli_flags(cli, tmp_path, clip_card):
    train = tmp_path / "fresh-run"
    train.mkdir()
    code, _, err = cli("run", str(train), "--metrics", str(clip_card), "--watch", "--max-polls", "1")
    assert code == 2 and "--base" in err  # no model_index.json yet: the base must be named
    code, stdout, err = cli("run", str(train), "--metrics", str(clip_card), "--watch", "--max-polls", "2",
                            "--poll-seconds", "0.05", "--base", str(tmp_path))
    assert code == 0, err
    assert "watching" in stdout
