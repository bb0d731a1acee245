"""The `evalkit` command line. Each command is a thin shell over a library function."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from evalkit.cli.options import GENERATE, RUN, run_options
from evalkit.errors import EXIT_FAILED, EvalkitError, environment_error

if TYPE_CHECKING:
    from evalkit.generation.checkpoints import CheckpointRef, ResolveOptions
    from evalkit.generation.generator import GenerateOptions, StepResult
    from evalkit.generation.protocol import GenerationRequest
    from evalkit.options import RunOptions
    from evalkit.prompts.sets import PromptSet
    from evalkit.runtime.distributed import Workers
    from evalkit.stepdir import StepDir

DEFAULT_PROMPT_SETS = "tifa-v1.0,coco-10k"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="evalkit")
def cli() -> None:
    """Evaluate text-to-image diffusion checkpoints the way the scaling study did."""


def _plan(checkpoint: str, prompt_sets: str, options: RunOptions) -> _Plan:
    """The generation options turned into the engine's objects; nothing is resolved or loaded."""
    from evalkit.generation.checkpoints import ResolveOptions
    from evalkit.generation.generator import GenerateOptions
    from evalkit.generation.protocol import GenerationRequest
    from evalkit.prompts.sets import load_prompt_set
    from evalkit.runtime.torchrun import placed

    options = placed(options, os.environ)
    sets = [load_prompt_set(s.strip()) for s in prompt_sets.split(",") if s.strip()]
    if not sets:
        raise EvalkitError("--prompts names no prompt set", f"e.g. --prompts {DEFAULT_PROMPT_SETS}")
    return _Plan(checkpoint, GenerationRequest.of(options), options.select(sets), ResolveOptions.of(options),
                 GenerateOptions.of(options))


@dataclass(frozen=True)
class _Plan:
    checkpoint: str
    request: GenerationRequest
    sets: list[PromptSet]
    resolve_options: ResolveOptions
    generate_options: GenerateOptions


@contextmanager
def _launched(options: RunOptions) -> Iterator[Workers]:
    """This launch's processes, verified over torch.distributed before any work (Alone without one)."""
    from evalkit.runtime.distributed import announced, joined

    if options.shard and announced(os.environ) > 1:
        raise EvalkitError("--shard is for processes started without a launcher; under torchrun or accelerate each "
                           "rank takes its own shard", "drop --shard (or start the processes without a launcher)")
    with joined(os.environ, options.rendezvous_timeout, " ".join(sys.argv[1:])) as workers:
        yield workers


def _generate(checkpoint: str, prompt_sets: str, options: RunOptions) -> list[StepResult]:
    from evalkit.generation.checkpoints import ResolveOptions, resolve

    refs = resolve(checkpoint, ResolveOptions.of(options))  # a wrong path is refused before torch is imported
    with _launched(options):
        return _generate_refs(refs, checkpoint, prompt_sets, options)


def _generate_refs(refs: list[CheckpointRef], checkpoint: str, prompt_sets: str,
                   options: RunOptions) -> list[StepResult]:
    from evalkit.generation.generator import Generator

    plan = _plan(checkpoint, prompt_sets, options)
    generator = Generator(plan.request, plan.generate_options, allow_pickle=options.allow_pickle)
    results = []
    for ref in refs:
        result = generator.run_one(ref, plan.sets)
        results.append(result)
        click.echo(f"{ref.name}@{ref.step_label}: {result.generated} generated, {result.reused} reused "
                   f"of {result.planned} ({result.images_per_second:.2f} img/s) -> {result.step_dir}")
    return results


@cli.command()
@click.argument("checkpoint")
@click.option("--prompts", "prompt_sets", default=DEFAULT_PROMPT_SETS, show_default=True,
              help="Comma-separated prompt sets: built-in names or prompt files (.txt/.jsonl/.csv).")
@run_options(GENERATE)
def generate(checkpoint: str, prompt_sets: str, options: RunOptions) -> None:
    """Generate the protocol's images for CHECKPOINT.

    CHECKPOINT is a diffusers pipeline folder, a hub id, a single .safetensors file (with
    --base), or a training output folder with checkpoint-N/ subfolders (every step is
    generated in order).
    """
    _generate(checkpoint, prompt_sets, options)


@cli.command()
@click.argument("checkpoint")
@click.option("--metrics", "metric_specs", required=True,
              help="Comma-separated metric names or card files (evalkit metrics list).")
@click.option("--prompts", "prompt_sets", default="",
              help="Prompt sets to generate (default: the sets the chosen metrics score).")
@click.option("--tifa-qa", default="", help="Local tifa_v1.0_question_answers.json (default: the hub dataset).")
@click.option("--coco-images", default="", help="COCO val2014 image folder (FID's reference images).")
@click.option("--watch", is_flag=True,
              help="Keep polling a training folder and evaluate each checkpoint-N once it is complete.")
@click.option("--poll-seconds", type=float, default=60.0, show_default=True,
              help="--watch: seconds between polls (also the settle interval for new files).")
@click.option("--max-polls", type=int, default=0, help="--watch: stop after N polls (default: until the stop file).")
@click.option("--stop-file", type=click.Path(path_type=Path), default=None,
              help="--watch: stop once this file exists (default: CHECKPOINT/STOP).")
@run_options(RUN)
def run(checkpoint: str, metric_specs: str, prompt_sets: str, tifa_qa: str, coco_images: str, watch: bool,
        poll_seconds: float, max_polls: int, stop_file: Path | None, options: RunOptions) -> None:
    """Generate images for CHECKPOINT, score them and write run.json: `generate` then `score`.

    On a training folder every checkpoint-N whose run.json does not yet cover the request is
    evaluated (covered ones are skipped without loading), then OUT/<model>/curves/ is rewritten.
    With --watch the folder is followed while training writes it (see docs/curves.md).
    """
    from evalkit.generation.checkpoints import ResolveOptions, resolve
    from evalkit.metrics.registry import preflight

    preflight(metric_specs)  # a wrong metric, card param or missing extra: refused before torch is imported
    if not watch:  # so is a wrong path (a watched folder may not exist yet)
        resolve(checkpoint, ResolveOptions.of(options))
    from evalkit.evaluation.evaluator import Evaluator, run_spec, watch_folder
    from evalkit.evaluation.watch import WatchOptions
    from evalkit.metrics.context import MetricContext
    from evalkit.metrics.registry import create_many

    metrics = create_many(metric_specs, MetricContext.from_flags(tifa_qa, coco_images))
    needed = ",".join(dict.fromkeys(m.info.prompt_set for m in metrics))
    if not watch:
        with _launched(options) as workers:
            plan = _plan(checkpoint, prompt_sets or needed, options)
            evaluator = Evaluator(plan.request, plan.generate_options, metrics, plan.sets, options.score_batch_size,
                                  options.allow_pickle, workers)
            run_spec(evaluator, plan.checkpoint, plan.resolve_options, echo=click.echo,
                     flops_per_step=options.flops_per_step, train_batch_size=options.train_batch_size,
                     split=options.split)
        return
    plan = _plan(checkpoint, prompt_sets or needed, options)
    evaluator = Evaluator(plan.request, plan.generate_options, metrics, plan.sets, options.score_batch_size,
                          options.allow_pickle)
    watch_options = WatchOptions(poll_seconds=poll_seconds, max_polls=max_polls, stop_file=stop_file)
    click.echo(f"watching {plan.checkpoint} every {poll_seconds:g}s (stop: create "
               f"{stop_file or Path(plan.checkpoint) / 'STOP'} or press Ctrl-C)")
    watch_folder(evaluator, Path(plan.checkpoint), plan.resolve_options, watch_options, echo=click.echo,
                 warn=lambda line: click.echo(line, err=True), flops_per_step=options.flops_per_step,
                 train_batch_size=options.train_batch_size)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--metrics", "metric_specs", required=True,
              help="Comma-separated metric names or card files (evalkit metrics list); NAME@SET scores a "
                   "text-only metric on another prompt set (e.g. clip@external for free prompts).")
@click.option("--tifa-qa", default="", help="Local tifa_v1.0_question_answers.json (default: the hub dataset).")
@click.option("--coco-images", default="", help="COCO val2014 image folder (FID's reference images).")
@click.option("--protocol-note", default="",
              help="Images made elsewhere: how they were made (model, sampler, steps, cfg, seed, size); run.json "
                   "records it as the protocol.")
@click.option("--same-protocol-as", "same_protocol_as", type=click.Path(path_type=Path), default=None,
              help="Images made elsewhere: a run.json whose evalkit protocol you declare they follow, so they "
                   "share its leaderboard boards (default: only with external results declared alike).")
@click.option("--prompt-set", "prompt_set", default="",
              help="Images made elsewhere: the prompt set of rows without a prompt_set column (a built-in set, "
                   "matched by prompt_id or text; any other name: free prompts, default 'external').")
@run_options(("device", "score_batch_size", "quiet", "out", "name", "step"), flags={"score_batch_size": "--batch-size"},
             helps={"out": "Images made elsewhere: the results folder their step folder is written to.",
                    "name": "Images made elsewhere: the model name (default: the source's name).",
                    "step": "Images made elsewhere: the training step they belong to (default: none, 'final')."})
def score(run_dir: Path, metric_specs: str, tifa_qa: str, coco_images: str, protocol_note: str,
          same_protocol_as: Path | None, prompt_set: str, options: RunOptions) -> None:
    """Score images: RUN_DIR is an --out folder, a model folder or one step folder, or images made
    elsewhere (a folder with metadata.jsonl/metadata.csv, a .jsonl/.csv list, a saved datasets dataset)."""
    from evalkit.intake.sources import is_external
    from evalkit.metrics.context import MetricContext
    from evalkit.metrics.registry import create_many, preflight
    from evalkit.runtime.torchrun import placed
    from evalkit.stepdir import find_step_dirs

    external = is_external(run_dir)
    if not external and (protocol_note or same_protocol_as is not None or prompt_set):
        raise EvalkitError(f"{run_dir} is not images made elsewhere, so --protocol-note, --same-protocol-as and "
                           "--prompt-set do not apply",
                           "give a folder with metadata.jsonl/metadata.csv, a .jsonl/.csv list or a saved dataset")
    preflight(metric_specs)
    step_dirs = [_intake(run_dir, protocol_note, same_protocol_as, prompt_set, options)] if external \
        else find_step_dirs(run_dir)
    metrics = create_many(metric_specs, MetricContext.from_flags(tifa_qa, coco_images))
    options = placed(options, os.environ)
    for step_dir in step_dirs:
        _score_and_print(step_dir.path, metrics, options)


def _intake(source: Path, note: str, same_as: Path | None, prompt_set: str, options: RunOptions) -> StepDir:
    """The step folder that images made elsewhere become (evalkit.intake)."""
    from evalkit.intake.ingest import Declaration, ingest
    from evalkit.results.model import Protocol
    from evalkit.results.run import read_run
    from evalkit.stepdir import StepDir, step_label

    claimed = read_run(same_as).protocol if same_as is not None else None
    if claimed is not None and not isinstance(claimed, Protocol):
        raise EvalkitError(f"--same-protocol-as {same_as} is itself a run of images made elsewhere",
                           "name the run.json of an evalkit-generated run")
    declaration = Declaration(note, claimed)
    model = options.name or (source.stem if source.is_file() else source.resolve().name)
    step = options.step if options.step >= 0 else None
    step_dir = StepDir.of(options.out, model, step_label(step))
    intake = ingest(source, step_dir, model, step, declaration, prompt_set)
    click.echo(f"{source}: {intake.images} images ({intake.source.kind}; {intake.copied} copied) -> {step_dir.path}")
    return step_dir


def _score_and_print(step_dir: Path, metrics: list[Any], options: RunOptions) -> None:
    from datetime import datetime, timezone

    from evalkit.evaluation.evaluator import metric_line, nonfinite_lines
    from evalkit.generation.protocol import GenerationRequest
    from evalkit.results.assemble import write_run_json
    from evalkit.results.run import read_run
    from evalkit.scoring.engine import score_step
    from evalkit.stepdir import StepDir

    torch_device = GenerationRequest.of(options).torch_device()
    started = datetime.now(timezone.utc)
    with StepDir(step_dir).lock("score"):
        results = score_step(step_dir, metrics, torch_device, options.score_batch_size, options.quiet)
        run_json = write_run_json(step_dir, results, metrics, started, device=str(torch_device))
    run = read_run(run_json)
    for result in results:
        click.echo(metric_line(step_dir, result, run.metrics[result.metric]))
    click.echo(f"{step_dir}: results -> {run_json}")
    for line in nonfinite_lines(step_dir, run):
        click.echo(line, err=True)


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
    """List the metrics `--metrics` accepts: what each scores, its models, and whether it runs here offline."""
    from rich.console import Console
    from rich.table import Table

    from evalkit.metrics.listing import listings

    items = listings()
    table = Table(title="Metrics (--metrics NAME, or a card file)")
    for column in ("name", "implementation", "prompt set", "better", "models", "here"):
        table.add_column(column, overflow="fold")
    for item in items:
        better = "" if item.higher_is_better is None else ("higher" if item.higher_is_better else "lower")
        table.add_row(item.name, item.implementation or item.origin, item.prompt_set, better,
                      "\n".join(item.models), "ready" if not item.missing else "missing")
    console = Console()
    console.print(table)
    for item in (i for i in items if i.missing):
        console.print(f"{item.name}: " + "; ".join(item.missing), highlight=False, soft_wrap=True)


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("evalkit-demo"), show_default=True)
@click.option("--quiet", is_flag=True)
def demo(out: Path, quiet: bool) -> None:
    """Run the whole job on tiny built-in random models (no downloads, CPU, ~1 minute)."""
    from evalkit.evaluation.demo import run_demo

    run_demo(out, quiet=quiet)


def _register_subcommands() -> None:
    from evalkit.cli.judge import judge
    from evalkit.cli.profile import profile
    from evalkit.cli.prompts import prompts

    cli.add_command(prompts)
    cli.add_command(profile)
    cli.add_command(judge)


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
    except OSError as e:
        known = environment_error(e)
        if known is None:
            raise
        click.echo(known.one_line(), err=True)
        sys.exit(known.exit_code)


# Commands that live in their own modules (registered before `python -m evalkit.cli` runs main).
from evalkit.cli.check import check  # noqa: E402
from evalkit.cli.leaderboard import leaderboard  # noqa: E402
from evalkit.cli.merge import merge  # noqa: E402
from evalkit.cli.site import site  # noqa: E402

cli.add_command(check)
cli.add_command(leaderboard)
cli.add_command(merge)
cli.add_command(site)
