"""`evalkit merge`: the finished shards of an array of `--shard i/N` jobs into run.json and curves."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from evalkit.cli.options import run_options
from evalkit.errors import EvalkitError
from evalkit.options import RunOptions

if TYPE_CHECKING:
    from evalkit.metrics.api import Metric


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--metrics", "metric_specs", default="",
              help="Metric names or card files the shards scored (default: the ones their reports name).")
@click.option("--tifa-qa", default="", help="Local tifa_v1.0_question_answers.json (as the shards were given).")
@click.option("--coco-images", default="", help="COCO val2014 image folder (as the shards were given).")
@run_options(("device", "quiet"))
def merge(path: Path, metric_specs: str, tifa_qa: str, coco_images: str, options: RunOptions) -> None:
    """Merge finished shards: PATH is a step folder, a model folder or an --out folder.

    Every step folder below PATH whose shards have all reported (shard-i-of-N.json) gets its
    run.json, as one process would have written it; nothing is generated or scored, and a
    missing, duplicated or mismatched shard is refused by name. Then each model's curves are
    rewritten. Run it as the job that depends on the whole array (docs/scaling.md).
    """
    from evalkit.evaluation.evaluator import describe_merge, echo_curves
    from evalkit.evaluation.merge import has_shards, merge_step, shard_metric_specs
    from evalkit.generation.protocol import GenerationRequest
    from evalkit.metrics.context import MetricContext
    from evalkit.metrics.registry import create_many
    from evalkit.results.curves import write_curves
    from evalkit.stepdir import find_step_dirs

    steps = find_step_dirs(path)
    pending = [s for s in steps if has_shards(s.path)]
    unfinished = [s for s in steps if not s.is_complete() and s not in pending]
    if unfinished:
        raise EvalkitError(f"{unfinished[0].path} has neither run.json nor a finished shard "
                           f"({len(unfinished)} such step folder(s))",
                           "run its shards first (evalkit run --shard i/N, same --out), then merge")
    # every step's shards are checked (reading them gives their metrics) before any run.json is written
    scored_by = {step: shard_metric_specs(step.path) for step in pending}
    device = GenerationRequest.of(options).torch_device()
    context = MetricContext.from_flags(tifa_qa, coco_images)
    created: dict[str, list[Metric]] = {}
    for step in pending:
        specs = metric_specs or scored_by[step]
        if specs not in created:
            created[specs] = list(create_many(specs, context))
        merged = merge_step(step.path, created[specs], device, options.quiet)
        for line in describe_merge(merged):
            click.echo(line)
    if not pending:
        click.echo(f"{path}: nothing to merge (every step folder has its run.json)")
    models = dict.fromkeys(s.model_dir.path for s in steps if s.label.isdigit())
    for model_dir in models:
        echo_curves(write_curves(model_dir), click.echo)
