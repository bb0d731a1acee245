"""`evalkit judge`: how far a judge agrees with people, on TIFA v1.0's 800 human-rated images.

`published` needs nothing but the shipped annotation file; `validate CARD --images DIR` scores the
annotated images with a TIFA card and sets its agreement beside the published judges'.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from evalkit.cli.options import run_options
from evalkit.errors import EvalkitError

if TYPE_CHECKING:
    from evalkit.judge.annotations import Annotations
    from evalkit.judge.report import Validated
    from evalkit.options import RunOptions


@click.group()
def judge() -> None:
    """Agreement of judges (TIFA's VQA models, CLIPScore, captioning metrics) with human ratings."""


def _report_options(command: Any) -> Any:
    for option in reversed([
        click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
                     help="Also write the report as JSON here."),
        click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), default=None,
                     help="Also write the Markdown report here."),
        click.option("--resamples", type=click.IntRange(min=2), default=1000, show_default=True,
                     help="Bootstrap resamples (over prompts) for the intervals."),
        click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed."),
        click.option("--annotations", "annotations_path", type=click.Path(path_type=Path), default=None,
                     help="Your own human ratings in TIFA's human_annotations layout (default: TIFA's 800 images)."),
    ]):
        command = option(command)
    return command


@judge.command("published")
@_report_options
def published_command(json_path: Path | None, markdown_path: Path | None, resamples: int, seed: int,
                      annotations_path: Path | None) -> None:
    """The published judges' agreement with the human ratings, from TIFA's annotation file alone."""
    from evalkit.judge.annotations import load_annotations

    _report(load_annotations(annotations_path), [], json_path, markdown_path, resamples, seed)


@judge.command("validate")
@click.argument("card")
@click.option("--images", type=click.Path(path_type=Path), required=True,
              help="Folder with TIFA's annotated images, under the annotation file's names.")
@click.option("--tifa-qa", default="", help="Local tifa_v1.0_question_answers.json (default: the hub dataset).")
@_report_options
@run_options(("device", "score_batch_size"), flags={"score_batch_size": "--batch-size"})
def validate_command(card: str, images: Path, tifa_qa: str, json_path: Path | None, markdown_path: Path | None,
                     resamples: int, seed: int, annotations_path: Path | None, options: RunOptions) -> None:
    """Score the annotated images with CARD (a TIFA card) and report its agreement beside the published judges'."""
    from evalkit.generation.protocol import GenerationRequest
    from evalkit.judge.annotations import load_annotations
    from evalkit.judge.report import Validated
    from evalkit.judge.validate import image_items, score_images
    from evalkit.metrics.context import MetricContext
    from evalkit.metrics.registry import create

    if not images.is_dir():
        raise EvalkitError(f"--images {images} is not a folder", "point it at the folder of TIFA's annotated images")
    annotations = load_annotations(annotations_path)
    annotated = annotations.images
    items = image_items(images, annotated)
    metric = create(card, MetricContext.from_flags(tifa_qa=tifa_qa))
    judged = score_images(metric, items, annotated, GenerationRequest.of(options).torch_device(),
                          options.score_batch_size)
    _report(annotations, [Validated(metric.info.name, metric.info.display_name, judged)], json_path, markdown_path,
            resamples, seed)


def _report(annotations: Annotations, validated: list[Validated], json_path: Path | None,
            markdown_path: Path | None, resamples: int, seed: int) -> None:
    from evalkit.judge.report import build_report, write_report_files
    from evalkit.results.bootstrap import BootstrapSpec

    report = build_report(annotations, annotations, validated, BootstrapSpec(resamples, seed))
    click.echo(write_report_files(report, markdown_path, json_path), nl=False)
