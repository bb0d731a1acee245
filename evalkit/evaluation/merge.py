"""Finished shards of one step folder into its run.json: what rank 0 does after the last barrier,
and what `evalkit merge` does after a SLURM array.

A merge computes nothing a shard should have: every image of the manifest must already have its
records (in the shards' record files), so it only checks the shard reports (results.shards),
folds the shards' record files into the step's own, aggregates and writes run.json — the run.json
one process would have written, plus the layout under provenance.shards. It runs under the step
folder's score lock and consumes the reports last, so a killed merge is simply run again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from evalkit.errors import EvalkitError
from evalkit.metrics.api import Metric
from evalkit.results.shards import RERUN, ShardReport, provenance_record, read_reports, remove_reports, shard_of
from evalkit.scoring.engine import MetricResult, missing_records, score_step
from evalkit.stepdir import StepDir


@dataclass(frozen=True)
class Merged:
    step_dir: Path
    run_json: Path
    scores: tuple[MetricResult, ...]
    shards: int


def shard_metric_specs(step_dir: Path) -> str:
    """The metrics the finished shards of a step scored, as `--metrics` names them (shipped names or
    card files): what `evalkit merge` re-creates by default."""
    reports = read_reports(StepDir(step_dir))
    return ",".join(m.spec(name) for name, m in sorted(reports[0].metrics.items())) if reports else ""


def has_shards(step_dir: Path) -> bool:
    return bool(StepDir(step_dir).shard_reports())


def merge_step(step_dir: Path, metrics: Sequence[Metric], device: torch.device, quiet: bool = True) -> Merged:
    """Check the shards and write run.json from their records (refusing, in one line, what is off)."""
    folder = StepDir(step_dir)
    with folder.lock("score", wait=True):
        folder.remove_orphaned_temporaries()  # a killed merge's half-written files are never trusted
        reports = read_reports(folder)
        if not reports:
            raise EvalkitError(f"{step_dir} holds no finished shard (no shard-i-of-N.json)",
                               "run the shards first (evalkit run --shard i/N, or under torchrun)")
        manifest = folder.read_manifest()
        absent = [(r, f) for r in reports for f in r.files if f not in manifest]
        if absent:
            report, file = absent[0]
            raise EvalkitError(f"shard {report.label} of {step_dir} reports {file}, which no manifest there records "
                               f"({len(absent)} such image(s))", "copy that shard's manifest.shard-*.jsonl and "
                               "images into the step folder, or " + RERUN)
        _check_metrics(step_dir, reports, metrics)
        started = datetime.now(timezone.utc)
        scores = score_step(step_dir, metrics, device, quiet=quiet)  # every record exists: aggregates only
        from evalkit.results.assemble import write_run_json

        run_json = write_run_json(step_dir, scores, metrics, started, device=str(device),
                                  shards=provenance_record(reports))
        remove_reports(folder, reports)
    return Merged(step_dir, run_json, tuple(scores), reports[0].count)


def _check_metrics(step_dir: Path, reports: Sequence[ShardReport], metrics: Sequence[Metric]) -> None:
    scored = reports[0].metrics
    given = {m.info.name: m for m in metrics}
    if set(given) != set(scored):
        raise EvalkitError(f"the shards of {step_dir} scored {', '.join(sorted(scored)) or 'no metric'}, not "
                           f"{', '.join(sorted(given))}", f"merge with --metrics {','.join(sorted(scored))}")
    for name, metric in given.items():
        if metric.fingerprint() != scored[name].fingerprint:
            raise EvalkitError(f"the shards of {step_dir} scored {name} with fingerprint "
                               f"{scored[name].fingerprint[:12]}, this {name} has {metric.fingerprint()[:12]} "
                               "(another card, model or version)", "merge with --metrics naming the card files "
                               "the shards used, and the same --tifa-qa/--coco-images")
        missing = missing_records(step_dir, metric)
        if missing:
            raise EvalkitError(f"{len(missing)} image(s) of {step_dir} have no {name} record, first {missing[0]} "
                               f"({shard_of(reports, missing[0])})", RERUN)
