"""`evalkit check`: the CI gate. Exit 0 pass, 1 regression, 2 unusable input.

A CI script branches on the exit code, so 1 must mean "a metric regressed" and nothing else:
every EvalkitError raised inside check leaves with 2, and so does an unexpected exception (its
traceback is printed first), which would otherwise exit 1 and pass for a regression.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from evalkit.errors import EXIT_USAGE, EvalkitError
from evalkit.fileio.reports import write_report
from evalkit.results.bootstrap import BootstrapSpec


@click.command("check")
@click.argument("new")
@click.option("--baseline", required=True,
              help="Baseline: a run.json, a step folder, or leaderboard:MODEL[@STEP] (no STEP: its latest).")
@click.option("--leaderboard", "leaderboard_dir", type=click.Path(path_type=Path), default=Path("leaderboard"),
              show_default=True, help="Leaderboard folder for leaderboard:MODEL[@STEP] references.")
@click.option("--thresholds", "thresholds_path", type=click.Path(path_type=Path), default=None,
              help="Thresholds YAML (default: the shipped metrics/thresholds/default.yaml).")
@click.option("--max-drop", multiple=True, metavar="METRIC=X",
              help="Largest accepted drop of a higher-is-better metric (repeatable; overrides the file).")
@click.option("--max-rise", multiple=True, metavar="METRIC=X",
              help="Largest accepted rise of a lower-is-better metric (repeatable; overrides the file).")
@click.option("--confidence", type=float, default=None,
              help="One-sided confidence a worsening beyond the margin needs to fail (default: the file's, 0.95).")
@click.option("--metrics", "only", default="", help="Compare only these metrics (comma-separated; default: all "
                                                    "that both runs have).")
@click.option("--resamples", type=int, default=BootstrapSpec.resamples, show_default=True,
              help="Bootstrap resamples for ratio metrics (FID uses its card's bootstrap_resamples).")
@click.option("--seed", type=int, default=BootstrapSpec.seed, show_default=True,
              help="Bootstrap seed (same indices for both runs).")
@click.option("--coco-images", default="", help="COCO val2014 folder, only if FID's reference statistics are not "
                                                "cached on this machine.")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), default=None,
              help="Also write the Markdown summary (a pull-request comment) here.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), default=None,
              help="Write JUnit XML here (one testcase per metric).")
@click.option("--allow-nonfinite", is_flag=True,
              help="Report NaN/inf images or metric values (run.json's nonfinite) without failing.")
def check(new: str, baseline: str, leaderboard_dir: Path, thresholds_path: Path | None, max_drop: tuple[str, ...],
          max_rise: tuple[str, ...], confidence: float | None, only: str, resamples: int, seed: int, coco_images: str,
          markdown_path: Path | None, junit_path: Path | None, allow_nonfinite: bool) -> None:
    """Compare NEW against --baseline on the same prompts and seeds; fail on a demonstrated regression.

    NEW and --baseline are run.json files, step folders holding one, or leaderboard:MODEL[@STEP].
    Each metric both runs have is compared with a paired bootstrap over prompts; a metric with a
    margin regresses when the bootstrap is at least --confidence sure that it got worse by more
    than the margin (docs/ci.md). Exit codes: 0 pass, 1 regression, 2 unusable input
    (missing or garbled files, incomparable runs, unknown metrics).
    """
    try:
        code = _check(new, baseline, leaderboard_dir, thresholds_path, max_drop, max_rise, confidence, only,
                      resamples, seed, coco_images, markdown_path, junit_path, allow_nonfinite)
    except EvalkitError as e:
        error = e.spelled("--" + e.param.replace("_", "-"))
        error.exit_code = EXIT_USAGE
        raise error from e
    except Exception as e:  # a crash must not exit 1, which means "regression" to CI
        traceback.print_exc()
        raise EvalkitError(f"check could not finish ({type(e).__name__}: {e})",
                           "the inputs may be damaged; if they are intact, report this with the traceback above") from e
    sys.exit(code)


def _check(new: str, baseline: str, leaderboard_dir: Path, thresholds_path: Path | None, max_drop: tuple[str, ...],
           max_rise: tuple[str, ...], confidence: float | None, only: str, resamples: int, seed: int,
           coco_images: str, markdown_path: Path | None, junit_path: Path | None, allow_nonfinite: bool) -> int:
    from evalkit.gate.check import LEADERBOARD_PREFIX, compare, load_run
    from evalkit.gate.report import junit_xml, markdown
    from evalkit.gate.thresholds import load_thresholds, with_overrides
    from evalkit.metrics.context import MetricContext

    thresholds = with_overrides(load_thresholds(thresholds_path), max_drop, max_rise, confidence)
    # A file path first, so a leaderboard reference can prefer the entry with the other run's protocol.
    if new.startswith(LEADERBOARD_PREFIX) and not baseline.startswith(LEADERBOARD_PREFIX):
        base_run = load_run(baseline, leaderboard_dir)
        new_run = load_run(new, leaderboard_dir, base_run.run.protocol.fingerprint)
    else:
        new_run = load_run(new, leaderboard_dir)
        base_run = load_run(baseline, leaderboard_dir, new_run.run.protocol.fingerprint)
    names = [m.strip() for m in only.split(",") if m.strip()]
    context = MetricContext.from_flags(coco_images=coco_images)
    report = compare(base_run, new_run, thresholds, names, resamples, seed, context, allow_nonfinite)
    text = markdown(report)
    click.echo(text)
    if markdown_path is not None:
        write_report(markdown_path, text)
    if junit_path is not None:
        write_report(junit_path, junit_xml(report))
    return report.exit_code

