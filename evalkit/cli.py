"""The `evalkit` command line. Each command is a thin shell over a library function."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from evalkit.errors import EXIT_FAILED, EvalkitError

if TYPE_CHECKING:
    from evalkit.generate import StepResult

DEFAULT_PROMPT_SETS = "tifa-v1.0,coco-10k"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="evalkit")
def cli() -> None:
    """Evaluate text-to-image diffusion checkpoints the way the scaling study did."""


def _shard(value: str) -> tuple[int, int]:
    """--shard i/N, or torchrun's RANK/WORLD_SIZE when not given."""
    if not value:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return (int(os.environ.get("RANK", "0")), world) if world > 1 else (0, 1)
    try:
        index_text, count_text = value.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError as e:
        raise EvalkitError(f"--shard {value!r} is not of the form i/N", "e.g. --shard 0/4 for the first of 4") from e
    if count < 1 or not 0 <= index < count:
        raise EvalkitError(f"--shard {value!r} is out of range", "i must satisfy 0 <= i < N")
    return index, count


def _batch(value: str) -> tuple[int, bool]:
    if value == "auto":
        return 0, True
    try:
        size = int(value)
    except ValueError as e:
        raise EvalkitError(f"--batch-size {value!r} is neither a number nor 'auto'", "e.g. --batch-size 8") from e
    if size < 1:
        raise EvalkitError(f"--batch-size must be at least 1 (got {size})", "or use --batch-size auto")
    return size, False


def _device(value: str) -> str:
    """Under torchrun each rank takes its own GPU unless a device is named."""
    local_rank = os.environ.get("LOCAL_RANK")
    if value == "auto" and local_rank is not None:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{local_rank}"
    return value


GENERATION_OPTIONS = [
    click.argument("checkpoint"),
    click.option("--out", type=click.Path(path_type=Path), default=Path("evalkit-out"), show_default=True),
    click.option("--base", default="", help="Pipeline folder or hub id for single files and training folders."),
    click.option("--revision", default="main", show_default=True, help="Hub revision (branch, tag or commit)."),
    click.option("--ema", is_flag=True, help="Evaluate checkpoint-N/unet_ema instead of the non-EMA weights."),
    click.option("--name", default="", help="Model name for the output folder (default: from the source)."),
    click.option("--step", type=int, default=-1, help="Training step to file a single checkpoint under."),
    click.option("--steps", type=int, default=50, show_default=True, help="Denoising steps."),
    click.option("--cfg", type=float, default=7.5, show_default=True, help="Classifier-free guidance scale."),
    click.option("--seed", type=int, default=0, show_default=True, help="Global seed."),
    click.option("--scheduler", default="ddim", show_default=True,
                 help="ddim, native, ddpm, pndm, euler, dpm++2m, flow-euler."),
    click.option("--dtype", default="auto", show_default=True,
                 help="auto (bf16 on CUDA, fp32 on CPU), float32, float16, bfloat16."),
    click.option("--device", default="auto", show_default=True),
    click.option("--batch-size", default="auto", show_default=True, help="A number, or auto (backs off on OOM)."),
    click.option("--resolution", type=int, default=0, help="Image size (default: the checkpoint's native one)."),
    click.option("--negative-prompt", default="", help="Negative prompt (the protocol uses none)."),
    click.option("--images-per-prompt", type=int, default=1, show_default=True),
    click.option("--limit", type=int, default=0, help="Only the first N prompts of each set (smoke runs)."),
    click.option("--shard", default="", help="i/N: generate every N-th sample starting at i (default: torchrun's)."),
    click.option("--allow-pickle", is_flag=True, help="Allow pickled weights, loaded with weights_only=True."),
    click.option("--quiet", is_flag=True, help="No progress bar (for CI logs)."),
]


def generation_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(GENERATION_OPTIONS):
        command = option(command)
    return command


def _generate(prompt_sets: str, checkpoint: str, out: Path, base: str, revision: str, ema: bool, name: str,
              step: int, steps: int, cfg: float, seed: int, scheduler: str, dtype: str, device: str,
              batch_size: str, resolution: int, negative_prompt: str, images_per_prompt: int, limit: int,
              shard: str, allow_pickle: bool, quiet: bool) -> list[StepResult]:
    from evalkit.checkpoints import ResolveOptions, resolve
    from evalkit.generate import GenerateOptions, Generator
    from evalkit.promptsets import load_prompt_set
    from evalkit.protocol import GenerationRequest

    size, auto = _batch(batch_size)
    shard_index, shard_count = _shard(shard)
    if limit < 0:
        raise EvalkitError(f"--limit must be >= 0 (got {limit})", "0 means all prompts")
    request = GenerationRequest(scheduler=scheduler, steps=steps, guidance_scale=cfg, seed=seed,
                                resolution=resolution, dtype=dtype, device=_device(device),
                                negative_prompt=negative_prompt, images_per_prompt=images_per_prompt)
    request.validate()
    sets = [load_prompt_set(s.strip()) for s in prompt_sets.split(",") if s.strip()]
    if not sets:
        raise EvalkitError("--prompts names no prompt set", f"e.g. --prompts {DEFAULT_PROMPT_SETS}")
    if limit:
        sets = [s.head(limit) for s in sets]
    refs = resolve(checkpoint, ResolveOptions(base=base, revision=revision, ema=ema, name=name, step=step,
                                              allow_pickle=allow_pickle))
    options = GenerateOptions(out=out, batch_size=size or 1, auto_batch=auto, shard_index=shard_index,
                              shard_count=shard_count, quiet=quiet)
    generator = Generator(request, options, allow_pickle=allow_pickle)
    results = []
    for ref in refs:
        result = generator.run_one(ref, sets)
        results.append(result)
        click.echo(f"{ref.name}@{ref.step_label}: {result.generated} generated, {result.reused} reused "
                   f"of {result.planned} ({result.images_per_second:.2f} img/s) -> {result.step_dir}")
    return results


@cli.command()
@click.option("--prompts", "prompt_sets", default=DEFAULT_PROMPT_SETS, show_default=True,
              help="Comma-separated prompt sets: built-in names or prompt files (.txt/.jsonl/.csv).")
@generation_options
def generate(prompt_sets: str, **options: Any) -> None:
    """Generate the protocol's images for CHECKPOINT.

    CHECKPOINT is a diffusers pipeline folder, a hub id, a single .safetensors file (with
    --base), or a training output folder with checkpoint-N/ subfolders (every step is
    generated in order).
    """
    _generate(prompt_sets, **options)


@cli.command()
@click.option("--metrics", "metric_specs", required=True,
              help="Comma-separated metric names or card files (evalkit metrics list).")
@click.option("--prompts", "prompt_sets", default="",
              help="Prompt sets to generate (default: the sets the chosen metrics score).")
@click.option("--score-batch-size", type=int, default=32, show_default=True)
@click.option("--tifa-qa", default="", help="Local tifa_v1.0_question_answers.json (default: the hub dataset).")
@click.option("--coco-images", default="", help="COCO val2014 image folder (FID's reference images).")
@generation_options
def run(metric_specs: str, prompt_sets: str, score_batch_size: int, tifa_qa: str, coco_images: str,
        **options: Any) -> None:
    """Generate images for CHECKPOINT and score them: `generate` then `score`."""
    from evalkit.metrics.options import MetricOptions
    from evalkit.metrics.registry import create_many

    metrics = create_many(metric_specs, MetricOptions(tifa_qa=tifa_qa, coco_images=coco_images))
    needed = ",".join(dict.fromkeys(m.info.prompt_set for m in metrics))
    results = _generate(prompt_sets or needed, **options)
    device = results[0].protocol.device if results else "cpu"
    for result in results:
        _score_and_print(result.step_dir, metrics, device, score_batch_size, options["quiet"])


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--metrics", "metric_specs", required=True,
              help="Comma-separated metric names or card files (evalkit metrics list).")
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--tifa-qa", default="", help="Local tifa_v1.0_question_answers.json (default: the hub dataset).")
@click.option("--coco-images", default="", help="COCO val2014 image folder (FID's reference images).")
@click.option("--quiet", is_flag=True)
def score(run_dir: Path, metric_specs: str, device: str, batch_size: int, tifa_qa: str, coco_images: str,
          quiet: bool) -> None:
    """Score existing images: RUN_DIR is an --out folder, a model folder or one step folder."""
    from evalkit.metrics.options import MetricOptions
    from evalkit.metrics.registry import create_many
    from evalkit.score import find_step_dirs

    metrics = create_many(metric_specs, MetricOptions(tifa_qa=tifa_qa, coco_images=coco_images))
    for step_dir in find_step_dirs(run_dir):
        _score_and_print(step_dir, metrics, _device(device), batch_size, quiet)


def _score_and_print(step_dir: Path, metrics: list[Any], device: str, batch_size: int, quiet: bool) -> None:
    from evalkit.protocol import GenerationRequest
    from evalkit.score import score_step

    if batch_size < 1:
        raise EvalkitError(f"batch size must be at least 1 (got {batch_size})", "e.g. --batch-size 32")
    torch_device = GenerationRequest(device=device).torch_device()
    for result in score_step(step_dir, metrics, torch_device, batch_size, quiet):
        value = result.values.get("value")
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        click.echo(f"{step_dir}: {result.metric} = {shown} (n={result.n_images}; {result.scored} scored, "
                   f"{result.reused} reused) -> {result.summary_path}")


@cli.group()
def assets() -> None:
    """Model weights and data that metrics need (for clusters without internet)."""


@assets.command("fetch")
@click.option("--metrics", "metric_specs", required=True, help="Comma-separated metric names or card files.")
@click.option("--tifa-qa", default="", help="Local tifa_v1.0_question_answers.json (default: the hub dataset).")
@click.option("--coco-images", default="", help="COCO val2014 image folder (FID's reference images).")
def assets_fetch(metric_specs: str, tifa_qa: str, coco_images: str) -> None:
    """Download (when online) and hash everything the metrics need; offline, check it is all cached.

    Run it once where there is network, then copy HF_HOME to the cluster and set HF_HUB_OFFLINE=1.
    """
    from evalkit.metrics.options import MetricOptions
    from evalkit.metrics.registry import create_many

    for metric in create_many(metric_specs, MetricOptions(tifa_qa=tifa_qa, coco_images=coco_images)):
        click.echo(f"{metric.info.name}: ready (fingerprint {metric.fingerprint()[:16]})")


@cli.group()
def metrics() -> None:
    """Metric plugins and their cards."""


@metrics.command("list")
def metrics_list() -> None:
    """List the metrics `--metrics` accepts."""
    from evalkit.metrics.registry import available

    for name, origin in available().items():
        click.echo(f"{name:24} {origin}")


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("evalkit-demo"), show_default=True)
@click.option("--quiet", is_flag=True)
def demo(out: Path, quiet: bool) -> None:
    """Run the whole job on tiny built-in random models (no downloads, CPU, ~1 minute)."""
    from evalkit.demo import run_demo

    run_demo(out, quiet=quiet)


def _register_subcommands() -> None:
    from evalkit.cli_profile import profile
    from evalkit.cli_prompts import prompts

    cli.add_command(prompts)
    cli.add_command(profile)


_register_subcommands()


def main() -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit code."""
    try:
        cli.main(standalone_mode=False)
    except EvalkitError as e:
        click.echo(e.one_line(), err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILED)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted; finished images are kept and a re-run resumes", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
