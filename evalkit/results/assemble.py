"""A step folder's run.json from its scored metrics: values, intervals, breakdowns and provenance.

Written atomically and last, after every requested metric is scored, so its presence marks a
complete step folder (docs/results.md). Values are the metrics' own aggregates (the references'
numbers); intervals and breakdowns come from a seeded bootstrap over prompts, resampled the way
`evalkit.results.resampling` chooses for the metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from evalkit.errors import EvalkitError
from evalkit.generation.manifest import ManifestRow
from evalkit.generation.record import GenerationRecord
from evalkit.metrics.api import Metric, ModelsRecorded, PromptDecomposable, Ratio, RecordViewed
from evalkit.metrics.cards import MetricCard
from evalkit.results.bootstrap import BootstrapSpec, function_samples, interval, ratio_interval, ratio_value
from evalkit.results.model import (
    AnyProtocol,
    Card,
    Checkpoint,
    ExternalProtocol,
    MetricEntry,
    NonFinite,
    PromptSetRecord,
    Protocol,
    Provenance,
    RunResult,
    is_external_record,
)
from evalkit.results.recordview import RecordView
from evalkit.results.resampling import BootstrapKind, bootstrap_kind, prompt_statistic
from evalkit.results.run import read_run, write_run
from evalkit.results.units import PromptGroups, group_records, tag_categories, write_units
from evalkit.runtime.provenance import device_description, git_commit, library_versions
from evalkit.scoring.engine import MetricResult
from evalkit.stepdir import StepDir

DEFAULT_BOOTSTRAP = BootstrapSpec()  # frozen: 1,000 resamples, seed 0, 95 %
PROTOCOL_KEYS = ("scheduler", "steps", "guidance_scale", "seed", "dtype", "negative_prompt", "images_per_prompt",
                 "eta", "seed_scheme", "device", "fingerprint")  # generation.json's, copied as they are


def write_run_json(step_dir: Path, metric_results: Sequence[MetricResult], metrics: Sequence[Metric],
                   started: datetime, generate_seconds: float | None = None, device: str = "cpu",
                   spec: BootstrapSpec = DEFAULT_BOOTSTRAP, shards: dict[str, Any] | None = None) -> Path:
    """Merge these metrics' results into the step's run.json (other metrics' entries are kept)."""
    folder = StepDir(step_dir)
    generation, manifest = folder.read_generation(), folder.read_manifest()
    by_name = {m.info.name: m for m in metrics}
    entries = _kept_entries(step_dir, {r.metric for r in metric_results})
    for result in metric_results:
        entries[result.metric] = metric_entry(step_dir, generation, manifest, by_name[result.metric], result, spec)
    run = RunResult(
        checkpoint=_checkpoint(step_dir, generation),
        protocol=_protocol(generation.protocol),
        prompt_sets={name: PromptSetRecord(s.fingerprint, s.n, s.part_of)
                     for name, s in sorted(generation.prompt_sets.items())},
        metrics=dict(sorted(entries.items())),
        provenance=_provenance(list(manifest.values()), generation, metric_results, started, generate_seconds,
                               device, shards),
        efficiency=folder.read_profile(),
        nonfinite=_nonfinite(manifest, entries),
    )
    return write_run(folder.run_json, run)


def _nonfinite(manifest: dict[str, ManifestRow], entries: dict[str, MetricEntry]) -> NonFinite:
    """Images whose float output was NaN/inf (the manifest marks them) and metrics without a finite value."""
    files = sorted(row.file for row in manifest.values() if row.nonfinite)
    metrics = sorted(name for name, entry in entries.items()
                     if not (isinstance(entry.value, int | float) and math.isfinite(entry.value)))
    return NonFinite(len(files), tuple(files[:NonFinite.EXAMPLES]), tuple(metrics))


def metric_entry(step_dir: Path, generation: GenerationRecord, manifest: dict[str, ManifestRow], metric: Metric,
                 result: MetricResult, spec: BootstrapSpec) -> MetricEntry:
    info = metric.info
    groups = group_records(step_dir, generation, manifest, info.name, result.fingerprint, info.prompt_set)
    n = len(groups.prompts)
    ratios: dict[str, Ratio] = {}
    by_category: dict[str, dict[str, dict[str, Any]]] = {}
    if bootstrap_kind(metric) is BootstrapKind.RATIO:
        ratios = cast(PromptDecomposable, metric).prompt_ratios(groups.groups)
        ci = ratio_interval(*ratios["value"], spec)
        used = spec
        by_category = _ratio_breakdowns(groups, ratios, spec)
    else:
        statistic = prompt_statistic(metric, groups.groups)
        used = BootstrapSpec(statistic.resamples, spec.seed, spec.level)
        ci = interval(function_samples(n, statistic.function, used), used.level)
    write_units(step_dir, info.name, result.fingerprint, groups, ratios)  # ratios recorded only for RATIO
    card = getattr(metric, "card", None)
    folder = StepDir(step_dir)
    files = folder.scores(info.name, result.fingerprint)
    generated = generation.prompt_sets.get(info.prompt_set)
    return MetricEntry(
        value=result.values.get("value"), ci95=ci, n=n, higher_is_better=info.higher_is_better,
        display_name=info.display_name, version=info.version, prompt_set=info.prompt_set,
        prompt_set_fingerprint=generated.fingerprint if generated is not None else "", fingerprint=result.fingerprint,
        card=(Card(card.name, card.implementation, card.fingerprint(), card.path) if card is not None
              else Card(info.name)),
        values=result.values, bootstrap=used, by_category=by_category,
        headline=card.headline if isinstance(card, MetricCard) else False,
        record_view=metric.record_view if isinstance(metric, RecordViewed) else RecordView(),
        models=metric.models_used() if isinstance(metric, ModelsRecorded) else {},
        records=folder.relative(files.records), units=folder.relative(files.units),
    )


def _ratio_breakdowns(groups: PromptGroups, ratios: dict[str, Ratio],
                      spec: BootstrapSpec) -> dict[str, dict[str, dict[str, Any]]]:
    """Prompt-tag groups (each category bootstrapped over its own prompts) and the metric's own groups."""
    num, den = (np.asarray(a, dtype=np.float64) for a in ratios["value"])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for kind, categories in sorted(tag_categories(groups).items()):
        for category, positions in sorted(categories.items()):
            sub_num, sub_den = num[positions], den[positions]
            out.setdefault(kind, {})[category] = _category(sub_num, sub_den, spec, len(positions))
    for key, (k_num, k_den) in sorted(ratios.items()):
        if key == "value" or "/" not in key:
            continue
        kind, category = key.split("/", 1)
        k_num_a, k_den_a = np.asarray(k_num, dtype=np.float64), np.asarray(k_den, dtype=np.float64)
        entry = _category(k_num_a, k_den_a, spec, int(np.count_nonzero(k_den_a)))
        entry["n_items"] = float(k_den_a.sum())
        out.setdefault(kind, {})[category] = entry
    return out


def _category(num: np.ndarray, den: np.ndarray, spec: BootstrapSpec, n: int) -> dict[str, Any]:
    return {"value": ratio_value(num, den), "ci95": list(ratio_interval(num, den, spec)), "n": n}


def _kept_entries(step_dir: Path, replaced: set[str]) -> dict[str, MetricEntry]:
    """Earlier metrics of this step whose record files still exist (a new run adds, never forgets)."""
    path = StepDir(step_dir).run_json
    if not path.is_file():
        return {}
    try:
        old = read_run(path)
    except EvalkitError:  # an unreadable or foreign run.json is replaced, not merged
        return {}
    return {name: entry for name, entry in old.metrics.items()
            if name not in replaced and (step_dir / entry.records).is_file()}


def _checkpoint(step_dir: Path, generation: GenerationRecord) -> Checkpoint:
    ckpt = generation.checkpoint
    return Checkpoint(name=ckpt.name, step=ckpt.step, step_label=step_dir.name, fingerprint=ckpt.fingerprint,
                      pipeline_class=ckpt.pipeline_class, source=ckpt.source)


def _protocol(protocol: dict[str, Any]) -> AnyProtocol:
    """generation.json's protocol as run.json records it (width and height as one resolution); images
    made elsewhere carry the user's declaration, recorded as written."""
    if is_external_record(protocol):
        return ExternalProtocol.from_json(protocol)
    read_back = {key: protocol.get(key) for key in PROTOCOL_KEYS}
    read_back["resolution"] = [protocol.get("width"), protocol.get("height")]
    return Protocol.from_json(read_back)


def _provenance(rows: Sequence[ManifestRow], generation: GenerationRecord, results: Sequence[MetricResult],
                started: datetime, generate_seconds: float | None, device: str,
                shards: dict[str, Any] | None) -> Provenance:
    n_images = len(rows)
    gen_seconds = generate_seconds if generate_seconds is not None else float(sum(r.seconds for r in rows))
    score_seconds = {r.metric: round(r.seconds, 3) for r in results}
    score_rate = {r.metric: (r.scored / r.seconds if r.seconds > 0 and r.scored else None) for r in results}
    gen_prov = generation.provenance
    versions = library_versions()
    return Provenance(
        evalkit=versions["evalkit"], git_commit=git_commit() or None, versions=versions,
        device=device_description(torch.device(device)), platform=gen_prov.get("platform", ""), generation=gen_prov,
        started=started.astimezone(timezone.utc).isoformat(timespec="seconds"),
        finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds={"generate": round(gen_seconds, 3), "score": score_seconds},
        images_per_second={"generate": (n_images / gen_seconds if gen_seconds > 0 else None), "score": score_rate},
        n_images=n_images, shards=shards,
    )
