"""`evalkit demo`: the whole job on tiny random models, on any machine, with no downloads.

It builds the same tiny fixtures the tests use — a released-model-style pipeline folder, a
training output folder with checkpoint-100/200/300 and tiny metric models — and runs the
real generation and scoring paths on a slice of tifa-v1.0 and coco-10k, writing exactly
what a real run writes.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from evalkit.checkpoints import ResolveOptions, resolve
from evalkit.generate import GenerateOptions, Generator, StepResult
from evalkit.promptsets import load_prompt_set
from evalkit.protocol import GenerationRequest
from evalkit.quiet import quiet_loading

DEMO_PROMPTS = 8  # per prompt set
BANNER = ("evalkit demo: the models below are tiny and RANDOM (built locally, no downloads). "
          "Their images are noise-like and any score of them is meaningless; the point is the pipeline.")


def build_demo_models(models: Path) -> tuple[Path, Path]:
    """A pipeline folder and a training folder; rebuilt only when missing."""
    from evalkit.tiny.sd import build_tiny_sd
    from evalkit.tiny.training import write_training_folder

    pipeline_dir = models / "tiny-sd"
    training_dir = models / "tiny-sd-train"
    if not (pipeline_dir / "model_index.json").is_file():
        build_tiny_sd(seed=0).save_pretrained(str(pipeline_dir))
    if not (training_dir / "checkpoint-300" / "unet_ema" / "config.json").is_file():
        write_training_folder(training_dir, build_tiny_sd(seed=1))
    return pipeline_dir, training_dir


def build_demo_cards(models: Path) -> list[Path]:
    """Metric cards pointing at tiny random metric models (the real cards point at hub ids)."""
    from evalkit.tiny.clip import build_tiny_clip, write_card
    from evalkit.tiny.imagereward import build_tiny_imagereward
    from evalkit.tiny.tifa_models import write_tiny_git, write_tiny_mpnet

    built = {"tiny-clip": build_tiny_clip, "tiny-git": write_tiny_git, "tiny-mpnet": write_tiny_mpnet}
    for name, build in built.items():
        if not (models / name / "config.json").is_file():
            build(models / name)
    imagereward = models / "tiny-imagereward" / "converted"
    if not (imagereward / "head.safetensors").is_file():
        build_tiny_imagereward(imagereward.parent)
    cards = models / "cards"
    cards.mkdir(parents=True, exist_ok=True)
    return [
        write_card(cards / "clip-tiny.yaml", "clip-tiny", "clip_score", "coco-10k", {"clip": models / "tiny-clip"}),
        # TIFA on the 2-prompt sample set, whose 19 questions ship with evalkit.
        write_card(cards / "tifa-tiny.yaml", "tifa-tiny", "tifa", "tifa-v1.0-sample",
                   {"vqa": models / "tiny-git", "sentence": models / "tiny-mpnet"},
                   params={"vqa_backend": "git", "questions": "sample"}),
        write_card(cards / "imagereward-tiny.yaml", "imagereward-tiny", "imagereward", "coco-10k",
                   {"imagereward": imagereward}),
    ]


def run_demo(out: Path, quiet: bool = False) -> list[StepResult]:
    from evalkit.metrics.registry import create
    from evalkit.score import score_step

    click.secho(BANNER, fg="yellow")
    started = time.perf_counter()
    with quiet_loading():
        pipeline_dir, training_dir = build_demo_models(out / "models")
        metrics = [create(str(card)) for card in build_demo_cards(out / "models")]
    sets = [load_prompt_set("tifa-v1.0").head(DEMO_PROMPTS), load_prompt_set("coco-10k").head(DEMO_PROMPTS),
            load_prompt_set("tifa-v1.0-sample")]
    request = GenerationRequest()  # the protocol: DDIM 50, CFG 7.5, seed 0, native resolution
    generator = Generator(request, GenerateOptions(out=out / "runs", batch_size=8, quiet=quiet))
    refs = resolve(str(pipeline_dir), ResolveOptions()) + resolve(str(training_dir), ResolveOptions())
    results = []
    for ref in refs:
        result = generator.run_one(ref, sets)
        results.append(result)
        scores = score_step(result.step_dir, metrics, generator.device, quiet=True)
        shown = ", ".join(f"{s.metric}={s.values['value']:.4f}" for s in scores)
        click.echo(f"  {ref.name}@{ref.step_label}: {result.generated} generated, {result.reused} reused "
                   f"({result.images_per_second:.1f} img/s); {shown}")
    click.echo(f"\ndemo finished in {time.perf_counter() - started:.1f}s")
    click.echo(f"  models:  {out / 'models'}")
    click.echo(f"  images:  {out / 'runs'}/<model>/<step>/images/<prompt-set>/<prompt-id>_<k>.png")
    click.echo(f"  records: {out / 'runs'}/<model>/<step>/generation.json and manifest.jsonl")
    click.echo(f"  scores:  {out / 'runs'}/<model>/<step>/scores/<metric>/<fingerprint>.jsonl and .summary.json")
    return results
