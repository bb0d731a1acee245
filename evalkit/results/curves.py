"""Training curves: every metric of a model against its training step, from run.json files only.

Reads the complete step folders (run.json present) with integer steps under OUT/<model>/ and
writes OUT/<model>/curves/<metric>.csv and .json (plots: evalkit.results.plots). A point belongs to a
*series*, one per comparability key (evalkit.results.comparability: protocol, metric and
prompt-set fingerprints): a curve never joins numbers that are not comparable, so a changed
protocol or metric card starts a new series instead of a kink. Everything written is a function
of the run.json files (and compute.json), so rebuilding from the same files gives the same
bytes. The site draws its curves from the JSON written here (`read_curve`), so the two agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.fileio.csvtext import csv_text
from evalkit.fileio.jsonfile import read_json_document, read_json_object
from evalkit.fileio.pngio import remove_orphaned_temporaries, write_atomic
from evalkit.results.comparability import ComparabilityKey, metric_key
from evalkit.results.model import AnyProtocol, MetricEntry, RunResult, as_float
from evalkit.results.run import read_run
from evalkit.stepdir import ModelDir

CURVES_SCHEMA = "evalkit.curves/1"
COMPUTE_SCHEMA = "evalkit.training-compute/1"
LABEL_CHARS = 8
COLUMNS = ("series", "step", "value", "ci_low", "ci_high", "n", "fingerprint")
TRAIN_PASSES = 3  # forward + backward ≈ 3 forwards
FLOPS_PER_MAC = 2


@dataclass(frozen=True)
class Point:
    step: int
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int | None
    fingerprint: str  # the checkpoint's weights fingerprint


@dataclass(frozen=True)
class Series:
    label: str  # first characters of the key's digest: short enough for a legend, stable across runs
    key: ComparabilityKey
    describe: str
    info: dict[str, Any]
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Curve:
    model: str
    metric: str
    display_name: str
    higher_is_better: bool | None
    series: tuple[Series, ...]  # newest first


@dataclass(frozen=True)
class _Row:
    """A point with what its series is described and ordered by."""

    point: Point
    finished: str  # provenance.finished of its run.json: orders series by recency
    entry: MetricEntry
    protocol: AnyProtocol


@dataclass(frozen=True)
class TrainingCompute:
    """Training FLOPs per optimizer step and how that number was obtained."""

    flops_per_step: int | float
    derivation: dict[str, Any]

    def at(self, step: int) -> int | float:
        return step * self.flops_per_step

    def as_record(self) -> dict[str, Any]:
        return {"unit": "FLOPs", "flops_per_step": self.flops_per_step, **self.derivation}


def step_runs(model_dir: Path) -> list[tuple[int, RunResult]]:
    """(step, run.json) of every complete step folder with an integer step, by step."""
    return [(step, read_run(folder.run_json)) for step, folder in ModelDir(model_dir).complete_training_steps()]


def collect_curves(model_dir: Path) -> list[Curve]:
    """One Curve per metric found in any complete step folder, metrics sorted by name."""
    rows: dict[str, dict[ComparabilityKey, list[_Row]]] = {}
    for step, run in step_runs(model_dir):
        for metric, entry in sorted(run.metrics.items()):
            low, high = entry.ci95
            point = Point(step, as_float(entry.value), as_float(low), as_float(high), entry.n,
                          run.checkpoint.fingerprint)
            row = _Row(point, run.provenance.finished, entry, run.protocol)
            rows.setdefault(metric, {}).setdefault(metric_key(run, metric), []).append(row)
    return [_curve(model_dir.name, metric, by_key) for metric, by_key in sorted(rows.items())]


def _curve(model: str, metric: str, by_key: dict[ComparabilityKey, list[_Row]]) -> Curve:
    newest: dict[str, tuple[datetime, int]] = {}
    series = []
    for key, rows in by_key.items():
        entry, protocol = rows[-1].entry, rows[-1].protocol  # the highest step describes the series
        info = {"prompt_set": entry.prompt_set, "metric_version": entry.version, "card": entry.card.name,
                "display_name": entry.display_name, "higher_is_better": entry.higher_is_better,
                "protocol": protocol.settings()}
        label = key.digest[:LABEL_CHARS]
        newest[label] = max((_parse_time(r.finished), r.point.step) for r in rows)
        series.append(Series(label, key, _describe(label, entry, protocol), info, tuple(r.point for r in rows)))
    series.sort(key=lambda s: (newest[s.label], s.label), reverse=True)
    first = series[0].info
    higher = first["higher_is_better"]
    return Curve(model, metric, str(first["display_name"] or metric),
                 bool(higher) if higher is not None else None, tuple(series))


def _describe(label: str, entry: MetricEntry, protocol: AnyProtocol) -> str:
    """A legend line a person can tell apart: what differs between series is usually in here."""
    return f"{label}: {protocol.describe()}, {entry.prompt_set} n={entry.n}"


def curve_record(curve: Curve, compute: TrainingCompute | None) -> dict[str, Any]:
    return {
        "schema_version": CURVES_SCHEMA,
        "model": curve.model,
        "metric": curve.metric,
        "display_name": curve.display_name,
        "higher_is_better": curve.higher_is_better,
        "compute": compute.as_record() if compute else None,
        "series": [{
            "series": s.label,
            "describe": s.describe,
            "key": s.key.to_json(),
            **s.info,
            "points": [_row(s.label, p, compute) for p in s.points],
        } for s in curve.series],
    }


def curve_csv(curve: Curve, compute: TrainingCompute | None) -> str:
    columns = (*COLUMNS, "compute") if compute else COLUMNS
    rows = [_row(series.label, point, compute) for series in curve.series for point in series.points]
    return csv_text(columns, (["" if row[c] is None else _text(row[c]) for c in columns] for row in rows))


def _row(label: str, point: Point, compute: TrainingCompute | None) -> dict[str, Any]:
    row: dict[str, Any] = {"series": label, "step": point.step, "value": point.value, "ci_low": point.ci_low,
                           "ci_high": point.ci_high, "n": point.n, "fingerprint": point.fingerprint}
    if compute:
        row["compute"] = compute.at(point.step)
    return row


def write_curves(model_dir: Path, compute: TrainingCompute | None = None, plots: bool = True) -> list[Path]:
    """Rewrite OUT/<model>/curves/ from the step folders; returns the files written.

    `compute` given is stored in curves/compute.json; when not given, a stored one is reused, so a
    later run without --train-batch-size keeps the compute axis.
    """
    curves = collect_curves(model_dir)
    if not curves:
        return []
    folder = ModelDir(model_dir)
    remove_orphaned_temporaries([folder.curves_dir])  # a killed writer's half-written curve files
    if compute is not None:
        save_compute(folder, compute)
    else:
        compute = load_compute(folder)
    written = []
    for curve in curves:
        csv_path, json_path = folder.curve_file(curve.metric, ".csv"), folder.curve_file(curve.metric, ".json")
        write_atomic(csv_path, curve_csv(curve, compute).encode("utf-8"))
        text = json.dumps(curve_record(curve, compute), indent=2, sort_keys=False, allow_nan=False)
        write_atomic(json_path, (text + "\n").encode("utf-8"))
        written += [csv_path, json_path]
        if plots:
            from evalkit.results.plots import plot_curve

            written += plot_curve(curve, compute, folder)
    return written


def read_curve(model_dir: Path, metric: str) -> Curve | None:
    """A curve as write_curves stored it (None when the model folder has no curve of `metric`)."""
    folder = ModelDir(model_dir)
    path = folder.curve_file(metric, ".json")
    if not path.is_file():
        return None
    hint = f"rewrite it: `evalkit run` on the training folder, or delete {folder.curves_dir}"
    record = read_json_document(path, "schema_version", CURVES_SCHEMA, hint)
    try:
        return Curve(record["model"], record["metric"], record["display_name"], record["higher_is_better"],
                     tuple(_stored_series(s) for s in record["series"]))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise EvalkitError(f"{path} is garbled ({type(e).__name__}: {e})", hint) from e


def _stored_series(record: dict[str, Any]) -> Series:
    info = {k: v for k, v in record.items() if k not in ("series", "describe", "key", "points")}
    points = tuple(Point(p["step"], p["value"], p["ci_low"], p["ci_high"], p["n"], p["fingerprint"])
                   for p in record["points"])
    return Series(record["series"], ComparabilityKey.from_json(record["key"]), record["describe"], info, points)


def save_compute(folder: ModelDir, compute: TrainingCompute) -> Path:
    path = folder.compute_json
    record = {"schema_version": COMPUTE_SCHEMA, **compute.as_record()}
    write_atomic(path, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    return path


def load_compute(folder: ModelDir) -> TrainingCompute | None:
    path = folder.compute_json
    if not path.is_file():
        return None
    hint = "delete it and pass --flops-per-step or --train-batch-size again"
    record = read_json_object(path, hint)
    flops = record.get("flops_per_step")
    if not isinstance(flops, (int, float)) or isinstance(flops, bool):
        raise EvalkitError(f"{path} is garbled: flops_per_step is {flops!r}, not a number", hint)
    derivation = {k: v for k, v in record.items() if k not in ("schema_version", "unit", "flops_per_step")}
    return TrainingCompute(flops, derivation)


def given_compute(flops_per_step: float) -> TrainingCompute:
    if flops_per_step <= 0:
        raise EvalkitError(f"--flops-per-step must be positive (got {flops_per_step})", "e.g. --flops-per-step 2.4e15")
    flops = int(flops_per_step) if float(flops_per_step).is_integer() else flops_per_step
    return TrainingCompute(flops, {"method": "given (--flops-per-step)"})


def derived_compute(spec: Any, train_batch_size: int) -> TrainingCompute:
    """≈ 3 (forward + backward) × 2 (FLOPs per MAC) × denoiser MACs per forward × batch size.

    `spec` is an evalkit.profile PipelineSpec (configs only). MACs are counted on the meta device
    (no weights) at the denoiser's native resolution, batch 1. Text encoders and the VAE encoder
    (frozen, forward only) are left out: in diffusion training they are a few percent of the cost.
    """
    from evalkit.profile import denoiser_forward

    if train_batch_size < 1:
        raise EvalkitError(f"--train-batch-size must be at least 1 (got {train_batch_size})",
                           "give the global batch size per optimizer step (all GPUs, times accumulation)")
    forward = denoiser_forward(spec)
    flops = TRAIN_PASSES * FLOPS_PER_MAC * forward.macs * train_batch_size
    return TrainingCompute(flops, {
        "method": "3 x 2 x denoiser MACs per forward x train batch size (evalkit.profile, configs only)",
        "denoiser_macs": forward.macs, "denoiser_class": forward.class_name, "resolution": forward.resolution,
        "train_batch_size": train_batch_size, "passes": TRAIN_PASSES, "flops_per_mac": FLOPS_PER_MAC,
        "excluded": "text encoders and VAE encoder (frozen, forward only)",
    })


def compute_for(spec_of: Callable[[], Any] | None, flops_per_step: float = 0.0, train_batch_size: int = 0
                ) -> TrainingCompute | None:
    """The training-compute axis asked for, or None. `spec_of` gives the newest checkpoint's
    PipelineSpec; it is only called when MACs must be counted."""
    if flops_per_step and train_batch_size:
        raise EvalkitError("--flops-per-step and --train-batch-size both given",
                           "give one: the FLOPs per step directly, or the batch size to derive them from")
    if flops_per_step:
        return given_compute(flops_per_step)
    if train_batch_size:
        if spec_of is None:
            raise EvalkitError("--train-batch-size needs a checkpoint to count MACs from", "pass --flops-per-step")
        return derived_compute(spec_of(), train_batch_size)
    return None


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _parse_time(text: str) -> datetime:
    """UTC, naive (a time without a zone is taken as UTC); unparseable sorts oldest."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return datetime.min
    return parsed if parsed.tzinfo is None else parsed.astimezone(timezone.utc).replace(tzinfo=None)
