"""The `evalkit` command line. Each command is a thin shell over a library function."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from evalkit.errors import EXIT_FAILED, EvalkitError

if TYPE_CHECKING:
    from evalkit.generation.checkpoints import ResolveOptions
    from evalkit.generation.generator import GenerateOptions, StepResult
    from evalkit.generation.protocol import GenerationRequest
    from evalkit.prompts.sets import PromptSet

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
    click.option("--subset", default="", help="A named prompt subset (prompts/subsets/), e.g. smoke for CI; its "
                 "results compare only with runs on the same subset."),
    click.option("--shard", default="", help="i/N: generate every N-th sample starting at i (default: torchrun's)."),
    click.option("--allow-pickle", is_flag=True, help="Allow pickled weights, loaded with weights_only=True."),
    click.option("--quiet", is_flag=True, help="No progress bar (for CI logs)."),
]


def generation_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(GENERATION_OPTIONS):
        command = option(command)
    return command


def _plan(prompt_sets: str, checkpoint: str, out: Path, base: str, revision: str, ema: bool, name: str,
          step: int, steps: int, cfg: float, seed: int, scheduler: str, dtype: str, device: str,
          batch_size: str, resolution: int, negative_prompt: str, images_per_prompt: int, limit: int,
          subset: str, shard: str, allow_pickle: bool, quiet: bool) -> _Plan:
    """The generation options checked and turned into objects; nothing is resolved or loaded."""
    from evalkit.generation.checkpoints import ResolveOptions
    from evalkit.generation.generator import GenerateOptions
    from evalkit.generation.protocol import GenerationRequest
    from evalkit.prompts.sets import load_prompt_set

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
    if subset:
        from evalkit.prompts.subsets import apply_subset

        sets = apply_subset(sets, subset)
    if limit:
        sets = [s.head(limit) for s in sets]
    resolve_options = ResolveOptions(base=base, revision=revision, ema=ema, name=name, step=step,
                                      allow_pickle=allow_pickle)
    options = GenerateOptions(out=out, batch_size=size or 1, auto_batch=auto, shard_index=shard_index,
                              shard_count=shard_count, quiet=quiet)
    return _Plan(checkpoint, request, sets, resolve_options, options, allow_pickle)


@dataclass(frozen=True)
class _Plan:
    checkpoint: str
    request: GenerationRequest
    sets: list[PromptSet]
    resolve_options: ResolveOptions
    options: GenerateOptions
    allow_pickle: bool


def _generate(prompt_sets: str, **options: Any) -> list[StepResult]:
    from evalkit.generation.checkpoints import resolve
    from evalkit.generation.generator import Generator

    plan = _plan(prompt_sets, **options)
    refs = resolve(plan.checkpoint, plan.resolve_options)
    generator = Generator(plan.request, plan.options, allow_pickle=plan.allow_pickle)
    results = []
    for ref in refs:
        result = generator.run_one(ref, plan.sets)
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
@click.option("--watch", is_flag=True,
              help="Keep polling a training folder and evaluate each checkpoint-N once it is complete.")
@click.option("--poll-seconds", type=float, default=60.0, show_default=True,
              help="--watch: seconds between polls (also the settle interval for new files).")
@click.option("--max-polls", type=int, default=0, help="--watch: stop after N polls (default: until the stop file).")
@click.option("--stop-file", type=click.Path(path_type=Path), default=None,
              help="--watch: stop once this file exists (default: CHECKPOINT/STOP).")
@click.option("--flops-per-step", type=float, default=0.0, help="Training FLOPs per step: adds a compute axis.")
@click.option("--train-batch-size", type=int, default=0,
              help="Training batch size: FLOPs per step = 3 x 2 x denoiser MACs x batch (evalkit.profile).")
@generation_options
def run(metric_specs: str, prompt_sets: str, score_batch_size: int, tifa_qa: str, coco_images: str, watch: bool,
        poll_seconds: float, max_polls: int, stop_file: Path | None, flops_per_step: float, train_batch_size: int,
        **options: Any) -> None:
    """Generate images for CHECKPOINT, score them and write run.json: `generate` then `score`.

    On a training folder every checkpoint-N whose run.json does not yet cover the request is
    evaluated (covered ones are skipped without loading), then OUT/<model>/curves/ is rewritten.
    With --watch the folder is followed while training writes it (see docs/curves.md).
    """
    from evalkit.evaluation.evaluator import Evaluator, run_spec, watch_folder
    from evalkit.evaluation.watch import WatchOptions
    from evalkit.metrics.context import MetricContext
    from evalkit.metrics.registry import create_many

    metrics = create_many(metric_specs, MetricContext.from_flags(tifa_qa, coco_images))
    needed = ",".join(dict.fromkeys(m.info.prompt_set for m in metrics))
    plan = _plan(prompt_sets or needed, **options)
    evaluator = Evaluator(plan.request, plan.options, metrics, plan.sets, score_batch_size, plan.allow_pickle)
    compute = {"flops_per_step": flops_per_step, "train_batch_size": train_batch_size}
    if not watch:
        run_spec(evaluator, plan.checkpoint, plan.resolve_options, echo=click.echo, **compute)
        return
    watch_options = WatchOptions(poll_seconds=poll_seconds, max_polls=max_polls, stop_file=stop_file)
    click.echo(f"watching {plan.checkpoint} every {poll_seconds:g}s (stop: create "
               f"{stop_file or Path(plan.checkpoint) / 'STOP'} or press Ctrl-C)")
    watch_folder(evaluator, Path(plan.checkpoint), plan.resolve_options, watch_options, echo=click.echo,
                 warn=lambda line: click.echo(line, err=True), **compute)


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
    from evalkit.metrics.context import MetricContext
    from evalkit.metrics.registry import create_many
    from evalkit.stepdir import find_step_dirs

    metrics = create_many(metric_specs, MetricContext.from_flags(tifa_qa, coco_images))
    for step_dir in find_step_dirs(run_dir):
        _score_and_print(step_dir.path, metrics, _device(device), batch_size, quiet)


def _score_and_print(step_dir: Path, metrics: list[Any], device: str, batch_size: int, quiet: bool) -> None:
    from datetime import datetime, timezone

    from evalkit.generation.protocol import GenerationRequest
    from evalkit.results.assemble import write_run_json
    from evalkit.results.run import read_run
    from evalkit.scoring.engine import score_step

    if batch_size < 1:
        raise EvalkitError(f"batch size must be at least 1 (got {batch_size})", "e.g. --batch-size 32")
    torch_device = GenerationRequest(device=device).torch_device()
    started = datetime.now(timezone.utc)
    results = score_step(step_dir, metrics, torch_device, batch_size, quiet)
    run_json = write_run_json(step_dir, results, metrics, started, device=str(torch_device))
    entries = read_run(run_json).metrics
    for result in results:
        entry = entries[result.metric]
        low, high = entry.ci95
        shown = _number(entry.value) + (f" [{_number(low)}, {_number(high)}]" if low is not None else "")
        click.echo(f"{step_dir}: {result.metric} = {shown} (n={result.n_images}; {result.scored} scored, "
                   f"{result.reused} reused)")
    click.echo(f"{step_dir}: results -> {run_json}")


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


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
    from evalkit.metrics.context import MetricContext
    from evalkit.metrics.registry import create_many

    for metric in create_many(metric_specs, MetricContext.from_flags(tifa_qa, coco_images)):
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
    from evalkit.evaluation.demo import run_demo

    run_demo(out, quiet=quiet)


def _register_subcommands() -> None:
    from evalkit.cli.profile import profile
    from evalkit.cli.prompts import prompts

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


# Commands that live in their own modules (registered before `python -m evalkit.cli` runs main).
from evalkit.cli.check import check  # noqa: E402
from evalkit.cli.leaderboard import leaderboard  # noqa: E402
from evalkit.cli.site import site  # noqa: E402

cli.add_command(check)
cli.add_command(leaderboard)
cli.add_command(site)
