"""run.json: one checkpoint's results with intervals, breakdowns and provenance (docs/results.md).

Written atomically and last, after every requested metric is scored, so its presence marks a
complete step folder; curves, the leaderboard, the site and `check` read nothing else.
Values are the metrics' own aggregates (the references' numbers); intervals and breakdowns
come from a seeded bootstrap over prompts (evalkit.results.bootstrap).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.errors import EvalkitError
from evalkit.fileio.pngio import write_atomic
from evalkit.generation.manifest import ManifestRow
from evalkit.metrics.api import Metric, PromptDecomposable, PromptResamplable, Ratio
from evalkit.results.bootstrap import BootstrapSpec, function_samples, interval, ratio_interval, ratio_value
from evalkit.results.units import PromptGroups, group_records, tag_categories, write_units
from evalkit.runtime.provenance import device_description, git_commit, library_versions
from evalkit.scoring.engine import MetricResult
from evalkit.stepdir import StepDir

RUN_SCHEMA = "evalkit.run/1"
DEFAULT_BOOTSTRAP = BootstrapSpec()  # frozen: 1,000 resamples, seed 0, 95 %
GENERIC_RESAMPLES = 50  # metrics that are neither ratios nor resamplable: every resample re-aggregates
PROTOCOL_KEYS = ("scheduler", "steps", "guidance_scale", "seed", "dtype", "negative_prompt", "images_per_prompt",
                 "eta", "seed_scheme", "fingerprint")


def schema_path() -> Path:
    """The JSON Schema of run.json, shipped inside the package."""
    return Path(__file__).parent / "schemas" / "run.schema.json"


def write_run_json(step_dir: Path, metric_results: Sequence[MetricResult], metrics: Sequence[Metric],
                   started: datetime, generate_seconds: float | None = None, device: str = "cpu",
                   spec: BootstrapSpec = DEFAULT_BOOTSTRAP) -> Path:
    """Merge these metrics' results into the step's run.json (other metrics' entries are kept)."""
    folder = StepDir(step_dir)
    generation, manifest = folder.read_generation(), folder.read_manifest()
    by_name = {m.info.name: m for m in metrics}
    entries = _kept_entries(step_dir, {r.metric for r in metric_results})
    for result in metric_results:
        entries[result.metric] = metric_entry(step_dir, generation, manifest, by_name[result.metric], result, spec)
    payload = {
        "schema_version": RUN_SCHEMA,
        "checkpoint": _checkpoint(step_dir, generation),
        "protocol": _protocol(generation["protocol"]),
        "prompt_sets": {name: {"fingerprint": s["fingerprint"], "n": s["n"]}
                        for name, s in sorted(generation.get("prompt_sets", {}).items())},
        "metrics": dict(sorted(entries.items())),
        "provenance": _provenance(list(manifest.values()), generation, metric_results, started, generate_seconds,
                                  device),
    }
    profile = folder.profile_json
    if profile.is_file():
        payload["efficiency"] = json.loads(profile.read_text(encoding="utf-8"))
    path = folder.run_json
    text = json.dumps(_finite(payload), indent=2, sort_keys=True, allow_nan=False, default=_json_default)
    write_atomic(path, (text + "\n").encode("utf-8"))
    return path


def read_run(path: Path) -> dict[str, Any]:
    """A run.json (or the step folder holding one), checked for the schema this evalkit reads."""
    file = StepDir(path).run_json if path.is_dir() else path
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise EvalkitError(f"{file} does not exist (the run is incomplete or was never scored)",
                           "run `evalkit run` or `evalkit score` on it first") from e
    except (OSError, json.JSONDecodeError) as e:
        raise EvalkitError(f"{file} is unreadable ({e})", "re-run `evalkit score` on its step folder") from e
    if not isinstance(value, dict) or value.get("schema_version") != RUN_SCHEMA:
        found = value.get("schema_version") if isinstance(value, dict) else type(value).__name__
        raise EvalkitError(f"{file} is not an evalkit {RUN_SCHEMA} result (schema_version {found!r})",
                           "re-score it with this evalkit version")
    missing = [k for k in ("checkpoint", "protocol", "prompt_sets", "metrics", "provenance") if k not in value]
    if missing:
        raise EvalkitError(f"{file} lacks {', '.join(missing)}", "re-run `evalkit score` on its step folder")
    return value


def metric_entry(step_dir: Path, generation: dict[str, Any], manifest: dict[str, ManifestRow], metric: Metric,
                 result: MetricResult, spec: BootstrapSpec) -> dict[str, Any]:
    info = metric.info
    groups = group_records(step_dir, generation, manifest, info.name, result.fingerprint, info.prompt_set)
    n = len(groups.prompts)
    ratios: dict[str, Ratio] = {}
    by_category: dict[str, dict[str, dict[str, Any]]] = {}
    if isinstance(metric, PromptDecomposable):
        ratios = metric.prompt_ratios(groups.groups)
        ci = ratio_interval(*ratios["value"], spec)
        bootstrap = spec.describe()
        by_category = _ratio_breakdowns(groups, ratios, spec)
    else:
        statistic, resamples = _statistic(metric, groups)
        used = BootstrapSpec(resamples, spec.seed, spec.level)
        ci = interval(function_samples(n, statistic, used), used.level)
        bootstrap = used.describe()
    write_units(step_dir, info.name, result.fingerprint, groups, ratios)
    card = getattr(metric, "card", None)
    folder = StepDir(step_dir)
    files = folder.scores(info.name, result.fingerprint)
    set_record = generation.get("prompt_sets", {}).get(info.prompt_set, {})
    return {
        "value": result.values.get("value"), "ci95": list(ci), "n": n, "higher_is_better": info.higher_is_better,
        "display_name": info.display_name, "version": info.version, "prompt_set": info.prompt_set,
        "prompt_set_fingerprint": set_record.get("fingerprint", ""), "fingerprint": result.fingerprint,
        "card": ({"name": card.name, "implementation": card.implementation, "fingerprint": card.fingerprint(),
                  "path": card.path} if card is not None else {"name": info.name}),
        "values": result.values, "bootstrap": bootstrap, "by_category": by_category,
        "records": folder.relative(files.records), "units": folder.relative(files.units),
    }


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


def _statistic(metric: Metric, groups: PromptGroups) -> tuple[Callable[[np.ndarray], float], int]:
    if isinstance(metric, PromptResamplable):
        return metric.resampler(groups.groups), metric.bootstrap_resamples

    def reaggregate(indices: np.ndarray) -> float:
        return float(metric.aggregate([r for i in indices for r in groups.groups[i]]).get("value", math.nan))

    return reaggregate, GENERIC_RESAMPLES


def _kept_entries(step_dir: Path, replaced: set[str]) -> dict[str, Any]:
    """Earlier metrics of this step whose record files still exist (a new run adds, never forgets)."""
    path = StepDir(step_dir).run_json
    if not path.is_file():
        return {}
    try:
        old = read_run(path)
    except EvalkitError:
        return {}
    return {name: entry for name, entry in old["metrics"].items()
            if name not in replaced and (step_dir / str(entry.get("records", ""))).is_file()}


def _checkpoint(step_dir: Path, generation: dict[str, Any]) -> dict[str, Any]:
    ckpt = generation["checkpoint"]
    step = ckpt.get("step")
    return {"name": ckpt["name"], "step": step, "step_label": step_dir.name, "fingerprint": ckpt["fingerprint"],
            "pipeline_class": ckpt.get("pipeline_class", ""), "source": ckpt.get("source", {})}


def _protocol(protocol: dict[str, Any]) -> dict[str, Any]:
    out = {key: protocol.get(key) for key in PROTOCOL_KEYS}
    out["resolution"] = [protocol.get("width"), protocol.get("height")]
    out["device"] = protocol.get("device")
    return out


def _provenance(rows: Sequence[ManifestRow], generation: dict[str, Any], results: Sequence[MetricResult],
                started: datetime, generate_seconds: float | None, device: str) -> dict[str, Any]:
    n_images = len(rows)
    gen_seconds = generate_seconds if generate_seconds is not None else float(sum(r.seconds for r in rows))
    score_seconds = {r.metric: round(r.seconds, 3) for r in results}
    score_rate = {r.metric: (r.scored / r.seconds if r.seconds > 0 and r.scored else None) for r in results}
    gen_prov = generation.get("provenance", {})
    versions = library_versions()
    return {
        "evalkit": versions["evalkit"], "git_commit": git_commit() or None,
        "versions": versions, "device": device_description(torch.device(device)),
        "platform": gen_prov.get("platform", ""), "generation": gen_prov,
        "started": started.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": {"generate": round(gen_seconds, 3), "score": score_seconds},
        "images_per_second": {"generate": (n_images / gen_seconds if gen_seconds > 0 else None), "score": score_rate},
        "n_images": n_images,
    }


def _finite(value: Any) -> Any:
    """NaN and infinities as null: run.json is strict JSON, which browsers and other tools parse."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
