"""`evalkit check`: is a new checkpoint's run worse than a baseline's, beyond what noise explains?

Both runs must be comparable (same protocol, prompt-set and metric fingerprints, same prompt
ids); check refuses anything else rather than compare numbers that mean different things. For
every metric both runs have, the paired bootstrap resamples prompts with the SAME indices in
both runs (prompt difficulty cancels out, so the interval of the difference is far narrower than
the two runs' own intervals suggest) and gives the distribution of new - base.

Decision rule, per gated metric (docs/ci.md): with margin m (the largest accepted worsening)
and confidence c, let p = the share of resamples in which the new run is worse than the base by
more than m (one-sided bootstrap confidence that the worsening exceeds the margin).
- p >= c: regression (exit 1).
- 1 - c < p < c: inconclusive; the interval straddles the margin. Reported, does NOT fail:
  the gate fails only on a demonstrated regression, so it does not flake on noise.
- p <= 1 - c: pass ("improved" when the share of resamples better than the base reaches c).
The interval reported is the two-sided (2c - 1) percentile interval, whose ends are the
one-sided c bounds, so "the whole interval is beyond the margin" is exactly a regression.

Ratio metrics (means over prompts, TIFA) come from the per-prompt sidecars next to the records
(no metric model is loaded); FID re-creates the metric from the card recorded in run.json,
checks its fingerprint, and resamples both runs' stored features through `metric.resampler`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import EvalkitError, did_you_mean
from evalkit.gate.thresholds import Threshold, Thresholds, flagged
from evalkit.metrics.context import NO_INPUTS, MetricContext
from evalkit.results.bootstrap import (
    BootstrapSpec,
    PairedDifference,
    paired_function_difference,
    paired_ratio_difference,
)
from evalkit.results.comparability import require_same_metric, require_same_protocol
from evalkit.results.model import MetricEntry, RunResult, as_float
from evalkit.results.resampling import prompt_statistic
from evalkit.results.run import RESCORE, read_run
from evalkit.results.units import PromptUnits, read_units
from evalkit.stepdir import StepDir

EXIT_PASS = 0
EXIT_REGRESSION = 1
LEADERBOARD_PREFIX = "leaderboard:"
REGRESSION, INCONCLUSIVE, PASS, IMPROVED, NOT_GATED = "regression", "inconclusive", "pass", "improved", "not gated"
TOLERANCE = 1e-12  # shares are k / N: compare against the level without float noise deciding a verdict


@dataclass(frozen=True)
class LoadedRun:
    """A run.json as check uses it: where it came from (as typed), where it is, its content."""

    spec: str
    path: Path
    run: RunResult

    @property
    def step_dir(self) -> Path:
        return self.path.parent

    @property
    def label(self) -> str:
        return self.run.label

    @property
    def metrics(self) -> dict[str, MetricEntry]:
        return self.run.metrics


@dataclass(frozen=True)
class MetricComparison:
    name: str
    display_name: str
    higher_is_better: bool
    prompt_set: str
    n: int  # prompts (the resampling unit)
    base_value: float | None
    new_value: float | None
    difference: float  # new - base, from the paired data
    ci: tuple[float, float]  # (2c - 1) two-sided percentile interval of new - base
    ci_level: float
    threshold: Threshold | None
    p_worse: float  # share of resamples worse than base by more than the margin (0 margin when not gated)
    p_better: float  # share of resamples better than base
    verdict: str
    resamples: int
    method: str  # "paired ratio bootstrap" or "paired resampling of <metric>"
    seconds: float


@dataclass(frozen=True)
class CheckReport:
    base: LoadedRun
    new: LoadedRun
    confidence: float
    thresholds_source: str
    seed: int
    comparisons: list[MetricComparison]
    not_compared: dict[str, str] = field(default_factory=dict)  # metric -> why
    allow_nonfinite: bool = False  # --allow-nonfinite: NaN/inf output is reported but does not fail

    @property
    def regressions(self) -> list[MetricComparison]:
        return [c for c in self.comparisons if c.verdict == REGRESSION]

    @property
    def nonfinite(self) -> dict[str, str]:
        """"new"/"baseline" -> what came out NaN or inf in that run (run.json's `nonfinite`)."""
        return {role: run.run.nonfinite.describe() for role, run in (("new", self.new), ("baseline", self.base))
                if run.run.nonfinite}

    @property
    def fails_on_nonfinite(self) -> bool:
        return bool(self.nonfinite) and not self.allow_nonfinite

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.regressions or self.fails_on_nonfinite else EXIT_PASS


# -- finding the runs ---------------------------------------------------------------------------------------

def load_run(spec: str, leaderboard: Path, prefer_protocol: str | None = None) -> LoadedRun:
    """A run.json, a step folder holding one, or `leaderboard:MODEL[@STEP]` from the store in `leaderboard`."""
    if spec.startswith(LEADERBOARD_PREFIX):
        path = leaderboard_run(spec.removeprefix(LEADERBOARD_PREFIX), leaderboard, prefer_protocol)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            path = StepDir(path).run_json
    return LoadedRun(spec, path.resolve(), read_run(path))


def leaderboard_run(ref: str, folder: Path, prefer_protocol: str | None) -> Path:
    """The run.json a leaderboard entry was merged from; no STEP means the model's latest step.

    When several entries match (the same step evaluated under two protocols, or retrained
    weights), the one with the other run's protocol is taken; if that still leaves several, the
    reference is ambiguous and refused.
    """
    from evalkit.publishing.store import ENTRIES_FILE, load_entries

    model, _, step = ref.rpartition("@") if "@" in ref else (ref, "", "")
    if not model:
        raise EvalkitError(f"{LEADERBOARD_PREFIX}{ref} names no model", f"e.g. {LEADERBOARD_PREFIX}my-model@final")
    if not (Path(folder) / ENTRIES_FILE).is_file():
        raise EvalkitError(f"no leaderboard in {folder} (no {ENTRIES_FILE})",
                           "pass --leaderboard DIR, the folder `evalkit leaderboard --into` wrote")
    entries = load_entries(folder)
    mine = [e for e in entries if e.model == model]
    if not mine:
        models = sorted({e.model for e in entries})
        suggestion = did_you_mean(model, models)
        raise EvalkitError(f"the leaderboard in {folder} has no model {model!r}"
                           + (f"; {suggestion}" if suggestion else ""),
                           "models: " + (", ".join(models[:20]) or "none"))
    if step:
        matches = [e for e in mine if e.step_label == step]
        if not matches:
            steps = sorted({e.step_label for e in mine})
            raise EvalkitError(f"the leaderboard has no step {step!r} of {model!r}", f"steps: {', '.join(steps)}")
    else:
        latest = max(e.step_order for e in mine)
        matches = [e for e in mine if e.step_order == latest]
    if len(matches) > 1 and prefer_protocol:
        same = [e for e in matches if e.protocol.fingerprint == prefer_protocol]
        matches = same or matches
    if len(matches) > 1:
        raise EvalkitError(f"{LEADERBOARD_PREFIX}{ref} matches {len(matches)} leaderboard entries (other weights or "
                           "protocols)", "pass one run.json instead: " + ", ".join(e.run for e in matches))
    return Path(matches[0].run)


# -- comparability ------------------------------------------------------------------------------------------

def compared_metrics(base: LoadedRun, new: LoadedRun, only: Sequence[str] = ()) -> tuple[list[str], dict[str, str]]:
    """The metrics to compare and, for the others, why not; refuses incomparable runs."""
    require_same_protocol(base.run, new.run)
    common = sorted(set(base.metrics) & set(new.metrics))
    skipped = {name: "only in the baseline" for name in sorted(set(base.metrics) - set(new.metrics))}
    skipped |= {name: "only in the new run" for name in sorted(set(new.metrics) - set(base.metrics))}
    if only:
        missing = [m for m in only if m not in common]
        if missing:
            raise EvalkitError(f"--metrics names {', '.join(missing)}, which not both runs have",
                               f"metrics in both: {', '.join(common) or 'none'}")
        skipped |= {name: "left out by --metrics" for name in common if name not in only}
        common = [m for m in common if m in only]
    if not common:
        raise EvalkitError(f"{base.path} and {new.path} have no metric in common",
                           f"baseline: {', '.join(base.metrics) or 'none'}; new: {', '.join(new.metrics) or 'none'}")
    for name in common:
        require_same_metric(name, base.run, new.run)
        if base.metrics[name].higher_is_better != new.metrics[name].higher_is_better:
            raise EvalkitError(f"{name} disagrees between the runs on whether higher is better", RESCORE)
    return common, skipped


def gate(names: Sequence[str], base: LoadedRun, new: LoadedRun, thresholds: Thresholds) -> dict[str, Threshold]:
    """The margin of each compared metric; refuses flags and file entries that name no known metric."""
    in_runs = set(base.metrics) | set(new.metrics)
    for name in flagged(thresholds):
        if name not in names:
            where = "neither run has it" if name not in in_runs else "it is not compared (see above)"
            raise EvalkitError(f"{thresholds.by_metric[name].source} names metric {name!r}, but {where}",
                               f"compared metrics: {', '.join(names)}")
    unknown = sorted(set(thresholds.by_metric) - in_runs - set(_known_metrics()))
    if unknown:
        raise EvalkitError(f"{thresholds.source} names unknown metric(s) {', '.join(unknown)}",
                           "use names from `evalkit metrics list` or the runs' metrics")
    chosen = {}
    for name in names:
        threshold = thresholds.by_metric.get(name)
        if threshold is not None:
            threshold.check_direction(base.metrics[name].higher_is_better)
            chosen[name] = threshold
    return chosen


def _known_metrics() -> list[str]:
    from evalkit.metrics.registry import available

    return list(available())


# -- paired comparison --------------------------------------------------------------------------------------

def compare(base: LoadedRun, new: LoadedRun, thresholds: Thresholds, only: Sequence[str] = (),
            resamples: int = BootstrapSpec.resamples, seed: int = BootstrapSpec.seed,
            context: MetricContext = NO_INPUTS, allow_nonfinite: bool = False) -> CheckReport:
    """Every common metric compared with a paired bootstrap and judged by the decision rule."""
    if resamples < 2:
        raise EvalkitError(f"resamples must be at least 2 (got {resamples})",
                           f"e.g. {BootstrapSpec.resamples}", param="resamples")
    names, skipped = compared_metrics(base, new, only)
    margins = gate(names, base, new, thresholds)
    comparisons = [compare_metric(name, base, new, margins.get(name), thresholds.confidence, resamples, seed,
                                  context) for name in names]
    return CheckReport(base, new, thresholds.confidence, thresholds.source, seed, comparisons, skipped,
                       allow_nonfinite)


def compare_metric(name: str, base: LoadedRun, new: LoadedRun, threshold: Threshold | None, confidence: float,
                   resamples: int, seed: int, context: MetricContext) -> MetricComparison:
    started = time.perf_counter()
    entry = base.metrics[name]
    level = 2.0 * confidence - 1.0
    base_units, new_units = units(base, name), units(new, name)
    ids = _same_prompt_ids(name, base_units, new_units)
    if base_units.is_ratio and new_units.is_ratio:
        spec = BootstrapSpec(resamples, seed, level)
        paired = paired_ratio_difference(new_units.value_ratio(), base_units.value_ratio(), spec)
        method = "paired ratio bootstrap"
    else:
        paired, spec = _paired_resampled(name, base, new, ids, seed, level, context)
        method = f"paired resampling of {name} (card bootstrap_resamples)"
    higher = entry.higher_is_better
    margin = threshold.margin if threshold is not None else 0.0
    p_worse, p_better = shares(paired.samples, higher, margin, name)
    return MetricComparison(
        name=name, display_name=new.metrics[name].display_name or name, higher_is_better=higher,
        prompt_set=entry.prompt_set, n=len(ids), base_value=as_float(entry.value),
        new_value=as_float(new.metrics[name].value), difference=float(paired.difference), ci=paired.ci,
        ci_level=level, threshold=threshold, p_worse=p_worse, p_better=p_better,
        verdict=decide(p_worse, p_better, confidence, threshold is not None), resamples=spec.resamples,
        method=method, seconds=time.perf_counter() - started)


def shares(samples: np.ndarray, higher_is_better: bool, margin: float, name: str = "") -> tuple[float, float]:
    """(share of resamples worse than base by more than `margin`, share better than base)."""
    finite = np.asarray(samples, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0:
        raise EvalkitError(f"{name}: the paired bootstrap gave no finite difference (too few prompts or images?)",
                           "compare runs with at least a few scored prompts")
    gain = finite if higher_is_better else -finite  # > 0: the new run is better
    return float(np.mean(gain < -margin)), float(np.mean(gain > 0))


def decide(p_worse: float, p_better: float, confidence: float, gated: bool) -> str:
    """The decision rule (module docstring): only a demonstrated worsening beyond the margin fails."""
    if not gated:
        return NOT_GATED
    if p_worse >= confidence - TOLERANCE:
        return REGRESSION
    if p_worse > 1.0 - confidence + TOLERANCE:
        return INCONCLUSIVE
    return IMPROVED if p_better >= confidence - TOLERANCE else PASS


def units(run: LoadedRun, name: str) -> PromptUnits:
    """The metric's per-prompt sidecar (prompt ids, per-prompt ratios), checked against run.json."""
    entry = run.metrics[name]
    path = run.step_dir / entry.units
    if not path.is_file():
        raise EvalkitError(f"{path} (the per-prompt data of {name}) is missing", RESCORE)
    value = read_units(path)
    if value.metric != name or value.fingerprint != entry.fingerprint:
        raise EvalkitError(f"{path} does not belong to {name} as recorded in {run.path}", RESCORE)
    return value


def _same_prompt_ids(name: str, base: PromptUnits, new: PromptUnits) -> list[str]:
    b, n = list(base.prompt_ids), list(new.prompt_ids)
    if b != n:
        only_b, only_n = sorted(set(b) - set(n)), sorted(set(n) - set(b))
        detail = (f"{len(only_b)} only in the baseline (e.g. {only_b[0]}), " if only_b else "") + \
                 (f"{len(only_n)} only in the new run (e.g. {only_n[0]})" if only_n else "")
        raise EvalkitError(f"{name} was scored on different prompt ids ({len(b)} vs {len(n)} prompts; "
                           f"{detail.rstrip(', ') or 'same ids, other order'})",
                           "score both runs on complete generations of the same prompt set")
    return list(b)


def _paired_resampled(name: str, base: LoadedRun, new: LoadedRun, ids: list[str], seed: int, level: float,
                      context: MetricContext) -> tuple[PairedDifference, BootstrapSpec]:
    """Metrics that are not ratios over prompts (FID): both runs' records through the re-created metric."""
    from evalkit.results.units import prompt_groups

    entry = base.metrics[name]
    metric = recreate_metric(name, entry, context)
    statistics = {}
    for which, run in (("base", base), ("new", new)):
        found = prompt_groups(run.step_dir, name, entry.fingerprint, entry.prompt_set)
        if found.prompt_ids != ids:
            raise EvalkitError(f"{name}: the records in {run.step_dir} do not cover the prompts of its sidecar",
                               RESCORE)
        statistics[which] = prompt_statistic(metric, found.groups)
    spec = BootstrapSpec(statistics["new"].resamples, seed, level)
    paired = paired_function_difference(len(ids), statistics["new"].function, statistics["base"].function, spec)
    return paired, spec


def recreate_metric(name: str, entry: MetricEntry, context: MetricContext) -> Any:
    """The metric as it was scored: from the card file recorded in run.json (else its name), same fingerprint."""
    from evalkit.metrics.registry import create, recreating_spec

    spec = recreating_spec(entry.card.path or "", entry.card.name or name)
    metric = create(spec, context)
    if metric.info.name != name or metric.fingerprint() != entry.fingerprint:
        raise EvalkitError(f"cannot re-create {name} as it was scored: the card {spec} now gives fingerprint "
                           f"{metric.fingerprint()[:12]}…, the runs record {entry.fingerprint[:12]}…",
                           "restore the card and weights the runs were scored with, or leave it out with --metrics")
    return metric
