"""A leaderboard entry as a typed object: the store's one-checkpoint summary of a run.json.

The store (`publishing.store`), the boards (`publishing.leaderboard`), the site and
`check leaderboard:MODEL` all read entries through `Entry`, so a field is spelled once here and
a renamed field is a type error rather than a `KeyError` in a template. An entry keeps only the
aggregates of each metric (value, interval, breakdowns, and where its per-image records are);
the metric's full `values`, its card and the records themselves stay in the run folder, reached
through `run`. `to_json` gives the canonical document the store writes (`from_json` reads it
back after `load_entries` has checked it against `schemas/entries.schema.json`): reading and
rewriting an entries.json changes nothing. Numbers are strict JSON: a non-finite value in a run
becomes null, as run.json writes it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from evalkit.fileio.strictjson import finite
from evalkit.results.bootstrap import BootstrapSpec
from evalkit.results.comparability import ComparabilityKey
from evalkit.results.model import AnyProtocol, MetricEntry, PromptSetRecord, RunResult, protocol_from_json
from evalkit.results.recordview import RecordView
from evalkit.stepdir import step_label

JsonObject = dict[str, Any]
EntryKey = tuple[str, str, str, str]


def schema_path() -> Path:
    """The JSON Schema of entries.json, shipped inside the package."""
    return Path(__file__).parent / "schemas" / "entries.schema.json"


def _number(value: Any) -> float | int | None:
    """A JSON number, or None where there is none or it is not finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if isinstance(value, int) or math.isfinite(value) else None


@dataclass(frozen=True)
class EntryMetric:
    """One metric of an entry: its aggregate, interval and breakdowns (no per-image values)."""

    value: float | None
    ci95: tuple[float | None, float | None]
    n: int
    higher_is_better: bool
    prompt_set: str
    prompt_set_fingerprint: str
    fingerprint: str
    by_category: JsonObject  # group -> category -> {value, ci95, n[, n_items]}
    records: str  # per-image records, relative to the run's step folder
    bootstrap: BootstrapSpec
    display_name: str | None = None
    version: str | None = None
    headline: bool = False
    record_view: RecordView = field(default_factory=RecordView)

    @classmethod
    def from_run(cls, metric: MetricEntry) -> EntryMetric:
        low, high = metric.ci95
        return cls(finite(metric.value), (finite(low), finite(high)), metric.n, metric.higher_is_better,
                   metric.prompt_set, metric.prompt_set_fingerprint, metric.fingerprint, finite(metric.by_category),
                   metric.records, metric.bootstrap, metric.display_name, metric.version, metric.headline,
                   metric.record_view)

    @classmethod
    def from_json(cls, doc: JsonObject) -> EntryMetric:
        low, high = doc["ci95"]
        boot = doc["bootstrap"]
        return cls(doc["value"], (low, high), doc["n"], doc["higher_is_better"], doc["prompt_set"],
                   doc["prompt_set_fingerprint"], doc["fingerprint"], doc["by_category"], doc["records"],
                   BootstrapSpec(boot["resamples"], boot["seed"], boot["level"]), doc.get("display_name"),
                   doc.get("version"), doc.get("headline") is True, RecordView.from_json(doc.get("record_view")))

    def to_json(self) -> JsonObject:
        optional = {k: v for k, v in (("display_name", self.display_name), ("version", self.version),
                                      ("headline", self.headline or None)) if v is not None}
        return {"value": self.value, "ci95": list(self.ci95), "n": self.n, "higher_is_better": self.higher_is_better,
                **optional, "prompt_set": self.prompt_set, "prompt_set_fingerprint": self.prompt_set_fingerprint,
                "fingerprint": self.fingerprint, "by_category": self.by_category, "records": self.records,
                "bootstrap": self.bootstrap.describe(),
                **({} if self.record_view.is_default else {"record_view": self.record_view.to_json()})}

    def cell(self) -> JsonObject:
        """The numbers a board row shows for it."""
        return {"value": self.value, "ci95": list(self.ci95), "n": self.n}


@dataclass(frozen=True)
class Efficiency:
    """What a checkpoint costs, summarised from its profile.json (docs/profile.md); parts not profiled are None."""

    parameters: int | None = None
    gmacs_per_image: float | None = None  # at the protocol's resolution when profiled there
    denoiser_gmacs: float | None = None  # one denoiser forward
    resolution: int | None = None  # the side those MACs were counted at
    seconds_per_image: float | None = None  # at batch 1
    images_per_second: float | None = None  # best over the batch sizes timed
    peak_memory_bytes: int | None = None
    device: str | None = None  # where the latency was measured

    @classmethod
    def from_profile(cls, profile: Any, resolution: Any = None) -> Efficiency:
        """The summary of a profile.json record; MACs at the protocol's `resolution` ([w, h] or a side)
        when the profile has it, else at the first resolution profiled. Missing parts stay None."""
        if not isinstance(profile, dict):
            return cls()
        found: JsonObject = {}
        parameters = profile.get("parameters") or {}
        if isinstance(parameters.get("total"), int):
            found["parameters"] = parameters["total"]
        compute = [c for c in profile.get("compute") or [] if isinstance(c, dict)]
        side = resolution[0] if isinstance(resolution, list) and resolution else resolution
        chosen = next((c for c in compute if c.get("resolution") == side), compute[0] if compute else None)
        if chosen is not None:
            per_image = _number((chosen.get("per_image") or {}).get("total"))
            denoiser = _number((chosen.get("denoiser") or {}).get("total"))
            if per_image is not None:
                found["gmacs_per_image"] = per_image / 1e9
            if denoiser is not None:
                found["denoiser_gmacs"] = denoiser / 1e9
            found["resolution"] = chosen.get("resolution")
        latency = profile.get("latency")
        if isinstance(latency, dict):
            points = [p for p in latency.get("points") or [] if isinstance(p, dict)]
            seconds = latency.get("batch1_seconds_per_image")
            if seconds is None and points:
                seconds = points[0].get("seconds_per_image")
            found["seconds_per_image"] = _number(seconds)
            found["images_per_second"] = _number(latency.get("best_images_per_second"))
            peaks = [peak for p in points if isinstance(peak := p.get("peak_memory_bytes"), int)]
            if peaks:
                found["peak_memory_bytes"] = max(peaks)
            if isinstance(latency.get("device"), dict) and latency["device"].get("name"):
                found["device"] = latency["device"]["name"]
        return cls.from_json(found)

    @classmethod
    def from_json(cls, doc: JsonObject) -> Efficiency:
        return cls(**{f.name: doc.get(f.name) for f in fields(cls)})

    def to_json(self) -> JsonObject:
        """The parts that are known (an empty object when nothing was profiled)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


@dataclass(frozen=True)
class Entry:
    """One evaluated checkpoint in the store: identity, protocol, metric aggregates, cost, and its run.json."""

    model: str
    step: int | None  # the training step; None for a released model (`final`)
    step_label: str
    checkpoint_fingerprint: str
    pipeline_class: str
    protocol: AnyProtocol
    prompt_sets: dict[str, PromptSetRecord]
    metrics: dict[str, EntryMetric]
    run: str  # absolute path of the run.json it was merged from (stored relative to the leaderboard folder)
    finished: str | None
    efficiency: Efficiency

    @classmethod
    def from_run(cls, run: RunResult, path: Path) -> Entry:
        checkpoint, protocol = run.checkpoint, run.protocol
        step = checkpoint.step
        step = step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None
        return cls(checkpoint.name, step, checkpoint.step_label or step_label(step), checkpoint.fingerprint,
                   checkpoint.pipeline_class, protocol, dict(run.prompt_sets),
                   {name: EntryMetric.from_run(m) for name, m in run.metrics.items()}, str(Path(path).resolve()),
                   run.provenance.finished, Efficiency.from_profile(run.efficiency, list(protocol.resolution or ())))

    @classmethod
    def from_json(cls, doc: JsonObject, folder: Path) -> Entry:
        """`doc` must have passed the schema (`publishing.store.load_entries` checks it first); its
        `run` is relative to the leaderboard `folder` (an older store's absolute path is kept)."""
        return cls(doc["model"], doc["step"], doc["step_label"], doc["checkpoint_fingerprint"], doc["pipeline_class"],
                   protocol_from_json(doc["protocol"]),
                   {name: PromptSetRecord.from_json(s) for name, s in doc["prompt_sets"].items()},
                   {name: EntryMetric.from_json(m) for name, m in doc["metrics"].items()},
                   str(Path(folder, doc["run"]).resolve()), doc.get("finished"),
                   Efficiency.from_json(doc.get("efficiency") or {}))

    def to_json(self, folder: Path) -> JsonObject:
        """The stored form: `run` relative to the leaderboard `folder`, so a published leaderboard
        names no local path and still finds its runs when moved together with them."""
        doc: JsonObject = {
            "model": self.model, "step": self.step, "step_label": self.step_label,
            "checkpoint_fingerprint": self.checkpoint_fingerprint, "pipeline_class": self.pipeline_class,
            "protocol": self.protocol.to_json(),
            "prompt_sets": {name: s.to_json() for name, s in self.prompt_sets.items()},
            "metrics": {name: m.to_json() for name, m in self.metrics.items()},
            "run": self.run_relative_to(folder), "finished": self.finished,
        }
        if self.efficiency:
            doc["efficiency"] = self.efficiency.to_json()
        return doc

    @property
    def key(self) -> EntryKey:
        """What identifies an entry: a model's step, its weights, and the protocol they were run under.

        The protocol is part of the key so one checkpoint evaluated under two protocols (two
        output folders) keeps both results; they land on separate boards.
        """
        return (self.model, self.step_label, self.checkpoint_fingerprint, self.protocol.fingerprint)

    def metric_key(self, name: str) -> ComparabilityKey:
        """The comparability key of the entry's metric `name` (which it must hold)."""
        metric = self.metrics[name]
        return ComparabilityKey(self.protocol.fingerprint, metric.fingerprint, metric.prompt_set_fingerprint)

    @property
    def step_order(self) -> tuple[int, int]:
        """Integer steps in order, then anything else (`final`) after them."""
        return (0, self.step) if isinstance(self.step, int) else (1, 0)

    @property
    def recency(self) -> tuple[str, str]:
        """Which of two runs of one key is newer: the later finish, then the larger path."""
        return (self.finished or "", self.run)

    def run_relative_to(self, folder: Path) -> str:
        """The run.json's path relative to `folder` (POSIX), as the store and the published files write it."""
        return Path(os.path.relpath(self.run, Path(folder).resolve())).as_posix()

    @property
    def step_dir(self) -> Path:
        """The step folder of the run it was merged from."""
        return Path(self.run).parent
