"""run.json as typed objects: the one shape every writer and reader of a checkpoint's results uses.

A field is spelled here once; everything else reads attributes, so a renamed or retyped field
is a type error instead of a `KeyError` somewhere downstream. `from_json` trusts its input to
have passed the JSON Schema (`evalkit.results.run.read_run` validates first), and `to_json`
gives back the document it was built from: fields the schema makes optional are `None` here and
left out of the JSON, so reading and rewriting a run.json changes nothing (a null written for an
optional field reads back as absent). The metric-specific parts (`values`, `by_category`), the
profile (`efficiency`) and library versions stay JSON objects: their keys belong to the metric
or the profiler, not to run.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from evalkit.prompts.sets import PartOf
from evalkit.results.bootstrap import BootstrapSpec
from evalkit.results.recordview import RecordView

RUN_SCHEMA = "evalkit.run/1"

JsonObject = dict[str, Any]


def _present(**fields: Any) -> JsonObject:
    """The optional fields that are set (absent ones stay absent in the JSON)."""
    return {k: v for k, v in fields.items() if v is not None}


@dataclass(frozen=True)
class Checkpoint:
    name: str
    step: int | None  # the training step; None for a released model
    step_label: str  # the step folder's name: the step, or "final"
    fingerprint: str  # sha256 of the weights
    pipeline_class: str
    source: JsonObject  # how the checkpoint was found (kind, path, hub id, ...)

    @classmethod
    def from_json(cls, doc: JsonObject) -> Checkpoint:
        return cls(doc["name"], doc["step"], doc["step_label"], doc["fingerprint"], doc["pipeline_class"],
                   doc["source"])

    def to_json(self) -> JsonObject:
        return {"name": self.name, "step": self.step, "step_label": self.step_label, "fingerprint": self.fingerprint,
                "pipeline_class": self.pipeline_class, "source": self.source}


@dataclass(frozen=True)
class Protocol:
    """The generation settings as read back from generation.json, and their fingerprint."""

    scheduler: str
    steps: int
    guidance_scale: float
    seed: int
    resolution: tuple[int, int]  # (width, height)
    dtype: str
    negative_prompt: str
    images_per_prompt: int
    eta: float | None
    seed_scheme: str | None
    device: str | None  # where the images were made: recorded, never part of the fingerprint
    fingerprint: str

    @classmethod
    def from_json(cls, doc: JsonObject) -> Protocol:
        width, height = doc["resolution"]
        return cls(doc["scheduler"], doc["steps"], doc["guidance_scale"], doc["seed"], (width, height), doc["dtype"],
                   doc["negative_prompt"], doc["images_per_prompt"], doc.get("eta"), doc.get("seed_scheme"),
                   doc.get("device"), doc["fingerprint"])

    def to_json(self) -> JsonObject:
        return {**self.settings(), **_present(device=self.device), "fingerprint": self.fingerprint}

    def settings(self) -> JsonObject:
        """What decides the images (the fingerprint's content), keys sorted: what curves and check describe."""
        return {"dtype": self.dtype, **_present(eta=self.eta), "guidance_scale": self.guidance_scale,
                "images_per_prompt": self.images_per_prompt, "negative_prompt": self.negative_prompt,
                "resolution": list(self.resolution), "scheduler": self.scheduler, "seed": self.seed,
                **_present(seed_scheme=self.seed_scheme), "steps": self.steps}

    @property
    def external(self) -> bool:
        return False

    def describe(self) -> str:
        """The settings a person tells boards and curves apart by (scheduler, steps, cfg, size, dtype)."""
        return ", ".join([self.scheduler.removesuffix("Scheduler") or "?", f"{self.steps} steps",
                          f"cfg {self.guidance_scale}", "x".join(str(r) for r in self.resolution), self.dtype])


@dataclass(frozen=True)
class ExternalProtocol:
    """Images made outside evalkit (`evalkit score` on an image folder, list or dataset): evalkit did
    not see how they were made, so the protocol is what the user declared (`--protocol-note`), and
    the images are pinned by their hashes. Its fingerprint is the declaration's, so external results
    share a board only with external results declared the same way; `same_as` is the user's claim
    that the images follow an evalkit protocol (`--same-protocol-as`), which then lends its
    fingerprint and puts them on that protocol's boards."""

    note: str
    images_sha256: str  # sha256 over the sorted (file, sha256) pairs of the images scored
    n_images: int
    resolution: tuple[int, int] | None  # (width, height) when every image has the same size
    same_as: Protocol | None
    fingerprint: str

    KIND: ClassVar[str] = "external"

    @property
    def external(self) -> bool:
        return True

    @classmethod
    def from_json(cls, doc: JsonObject) -> ExternalProtocol:
        resolution = doc.get("resolution")
        same_as = doc.get("same_as")
        return cls(doc["note"], doc["images_sha256"], doc["n_images"],
                   (resolution[0], resolution[1]) if resolution else None,
                   Protocol.from_json(same_as) if same_as else None, doc["fingerprint"])

    def to_json(self) -> JsonObject:
        return {"kind": self.KIND, "note": self.note, "images_sha256": self.images_sha256, "n_images": self.n_images,
                **_present(resolution=list(self.resolution) if self.resolution else None,
                           same_as=self.same_as.to_json() if self.same_as else None),
                "fingerprint": self.fingerprint}

    def settings(self) -> JsonObject:
        """The declaration (and the claimed protocol's settings): what check names when protocols differ."""
        return {"external": self.note, **(self.same_as.settings() if self.same_as else {})}

    def describe(self) -> str:
        claimed = f"; declared same as {self.same_as.describe()}" if self.same_as else ""
        return f"external images ({self.note}){claimed}"


AnyProtocol = Protocol | ExternalProtocol


def is_external_record(doc: JsonObject) -> bool:
    """Whether a protocol record (run.json's or generation.json's) is an external declaration."""
    return doc.get("kind") == ExternalProtocol.KIND


def protocol_from_json(doc: JsonObject) -> AnyProtocol:
    """run.json's protocol: evalkit's read-back settings, or an external declaration (`kind`)."""
    return ExternalProtocol.from_json(doc) if is_external_record(doc) else Protocol.from_json(doc)


@dataclass(frozen=True)
class PromptSetRecord:
    fingerprint: str  # of the prompts scored: a subset's own (the comparability key uses it)
    n: int
    part_of: PartOf | None = None  # a subset: the whole set (its `prompts list` fingerprint) and how it was chosen

    @classmethod
    def from_json(cls, doc: JsonObject) -> PromptSetRecord:
        part_of = doc.get("part_of")
        return cls(doc["fingerprint"], doc["n"], PartOf.from_json(part_of) if part_of else None)

    def to_json(self) -> JsonObject:
        return {"fingerprint": self.fingerprint, "n": self.n,
                **_present(part_of=self.part_of.to_json() if self.part_of is not None else None)}


@dataclass(frozen=True)
class Card:
    """The metric card a result was scored with; a metric without a card records only its name."""

    name: str
    implementation: str | None = None
    fingerprint: str | None = None
    path: str | None = None  # where the card file was read from: `check` re-creates the metric from it

    @classmethod
    def from_json(cls, doc: JsonObject) -> Card:
        return cls(doc["name"], doc.get("implementation"), doc.get("fingerprint"), doc.get("path"))

    def to_json(self) -> JsonObject:
        return {"name": self.name, **_present(implementation=self.implementation, fingerprint=self.fingerprint,
                                              path=self.path)}


@dataclass(frozen=True)
class MetricEntry:
    """One metric's result for the checkpoint: value, interval, breakdowns and where its records are."""

    value: float | None  # the metric's own aggregate; None where it is undefined
    ci95: tuple[float | None, float | None]
    n: int  # prompts: the bootstrap unit
    higher_is_better: bool
    prompt_set: str
    prompt_set_fingerprint: str
    fingerprint: str  # the metric's: card, weights, versions
    card: Card
    values: JsonObject  # the metric's full aggregate
    bootstrap: BootstrapSpec
    by_category: JsonObject  # group -> category -> {value, ci95, n[, n_items]}
    records: str  # per-image records, relative to the step folder
    units: str  # per-prompt sidecar, relative to the step folder
    display_name: str | None = None
    version: str | None = None
    headline: bool = False  # the card declares it the board's headline metric (written only when true)
    record_view: RecordView = field(default_factory=RecordView)  # how the site lists records (default: unwritten)
    # The models the number comes from (metrics.api.ModelsRecorded): role -> source, revision, fingerprint...
    models: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: JsonObject) -> MetricEntry:
        low, high = doc["ci95"]
        boot = doc["bootstrap"]
        return cls(doc["value"], (low, high), doc["n"], doc["higher_is_better"], doc["prompt_set"],
                   doc["prompt_set_fingerprint"], doc["fingerprint"], Card.from_json(doc["card"]), doc["values"],
                   BootstrapSpec(boot["resamples"], boot["seed"], boot["level"]), doc["by_category"], doc["records"],
                   doc["units"], doc.get("display_name"), doc.get("version"), doc.get("headline") is True,
                   RecordView.from_json(doc.get("record_view")), doc.get("models", {}))

    def to_json(self) -> JsonObject:
        return {"value": self.value, "ci95": list(self.ci95), "n": self.n, "higher_is_better": self.higher_is_better,
                **_present(display_name=self.display_name, version=self.version, headline=self.headline or None),
                "prompt_set": self.prompt_set, "prompt_set_fingerprint": self.prompt_set_fingerprint,
                "fingerprint": self.fingerprint, "card": self.card.to_json(), "values": self.values,
                "bootstrap": self.bootstrap.describe(), "by_category": self.by_category, "records": self.records,
                "units": self.units, **_present(record_view=None if self.record_view.is_default
                                                else self.record_view.to_json(), models=self.models or None)}


@dataclass(frozen=True)
class Provenance:
    """Where, when and with what the result was made: never part of what makes results comparable."""

    evalkit: str
    git_commit: str | None
    versions: dict[str, str]  # library -> version
    device: JsonObject  # type, name, memory...
    started: str  # ISO 8601, UTC
    finished: str
    seconds: JsonObject  # {"generate": s, "score": {metric: s}}
    images_per_second: JsonObject  # {"generate": x, "score": {metric: x}}
    platform: str | None = None
    generation: JsonObject | None = None  # generation.json's provenance: versions when the images were made
    n_images: int | None = None
    shards: JsonObject | None = None  # a merged multi-process run: {"count": N, "hosts": [...], "images": [...]}

    @classmethod
    def from_json(cls, doc: JsonObject) -> Provenance:
        return cls(doc["evalkit"], doc["git_commit"], doc["versions"], doc["device"], doc["started"], doc["finished"],
                   doc["seconds"], doc["images_per_second"], doc.get("platform"), doc.get("generation"),
                   doc.get("n_images"), doc.get("shards"))

    def to_json(self) -> JsonObject:
        return {"evalkit": self.evalkit, "git_commit": self.git_commit, "versions": self.versions,
                "device": self.device,
                **_present(platform=self.platform, generation=self.generation),
                "started": self.started, "finished": self.finished, "seconds": self.seconds,
                "images_per_second": self.images_per_second, **_present(n_images=self.n_images, shards=self.shards)}


@dataclass(frozen=True)
class NonFinite:
    """What came out NaN or ±inf at this step: generated images (their PNGs are what quantising NaN
    gives, often all black) and metric values. Recorded so a broken checkpoint never looks merely
    bad; `evalkit check` fails on it unless --allow-nonfinite."""

    images: int = 0
    examples: tuple[str, ...] = ()  # the first few such images, relative to the step folder
    metrics: tuple[str, ...] = ()  # metrics whose value is not finite (run.json writes null)

    EXAMPLES = 10

    def __bool__(self) -> bool:
        return bool(self.images or self.metrics)

    @classmethod
    def from_json(cls, doc: JsonObject | None) -> NonFinite:
        doc = doc or {}
        return cls(int(doc.get("images", 0)), tuple(doc.get("examples", ())), tuple(doc.get("metrics", ())))

    def to_json(self) -> JsonObject:
        return {"images": self.images, "examples": list(self.examples), "metrics": list(self.metrics)}

    def describe(self) -> str:
        parts = []
        if self.images:
            first = f" (e.g. {self.examples[0]})" if self.examples else ""
            parts.append(f"{self.images} image(s) with NaN/inf output{first}")
        if self.metrics:
            parts.append(f"non-finite value of {', '.join(self.metrics)}")
        return "; ".join(parts)


@dataclass(frozen=True)
class RunResult:
    """One checkpoint's run.json (`schema_version` evalkit.run/1; docs/results.md)."""

    checkpoint: Checkpoint
    protocol: AnyProtocol
    prompt_sets: dict[str, PromptSetRecord]
    metrics: dict[str, MetricEntry]
    provenance: Provenance
    efficiency: JsonObject | None = None  # profile.json's content, when the step folder has one
    nonfinite: NonFinite = NonFinite()  # written only when something was not finite

    @property
    def label(self) -> str:
        """model@step, as people name a checkpoint."""
        return f"{self.checkpoint.name}@{self.checkpoint.step_label or self.checkpoint.step or 'final'}"

    @classmethod
    def from_json(cls, doc: JsonObject) -> RunResult:
        return cls(Checkpoint.from_json(doc["checkpoint"]), protocol_from_json(doc["protocol"]),
                   {name: PromptSetRecord.from_json(s) for name, s in doc["prompt_sets"].items()},
                   {name: MetricEntry.from_json(m) for name, m in doc["metrics"].items()},
                   Provenance.from_json(doc["provenance"]), doc.get("efficiency"),
                   NonFinite.from_json(doc.get("nonfinite")))

    def to_json(self) -> JsonObject:
        return {"schema_version": RUN_SCHEMA, "checkpoint": self.checkpoint.to_json(),
                "protocol": self.protocol.to_json(),
                "prompt_sets": {name: s.to_json() for name, s in self.prompt_sets.items()},
                "metrics": {name: m.to_json() for name, m in self.metrics.items()},
                **_present(efficiency=self.efficiency), "provenance": self.provenance.to_json(),
                **_present(nonfinite=self.nonfinite.to_json() if self.nonfinite else None)}


def as_float(value: object) -> float | None:
    """A JSON number as a float (ints too: 1 and 1.0 print alike in curves and reports), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
