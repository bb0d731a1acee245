"""generation.json as typed objects: what the images of one step folder are.

Generation writes it once per step folder (and extends its prompt sets when a later run adds a
set); scoring, run.json assembly, the site gallery and the evaluator's skip check read it. They all
go through `GenerationRecord`, read by `evalkit.stepdir.StepDir.read_generation` after validation
against the shipped schema (`schemas/generation.schema.json`), so a hand-edited or foreign file is
one line naming the field, not a KeyError in a later stage. The protocol and provenance stay JSON
objects: the protocol is `EffectiveProtocol.as_record()`, which run.json's typed `Protocol` reads
field by field, and provenance is copied into run.json as recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.prompts.sets import PartOf, PromptSet, builtin_names, load_prompt_set

GENERATION_SCHEMA = "evalkit.generation/1"

JsonObject = dict[str, Any]


def schema_path() -> Path:
    """The JSON Schema of generation.json, shipped inside the package."""
    return Path(__file__).parent / "schemas" / "generation.schema.json"


@dataclass(frozen=True)
class GeneratedCheckpoint:
    """The weights that made the images (run.json's checkpoint adds the step folder's label)."""

    name: str
    step: int | None
    fingerprint: str
    pipeline_class: str = ""
    source: JsonObject = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: JsonObject) -> GeneratedCheckpoint:
        return cls(doc["name"], doc.get("step"), doc["fingerprint"], doc.get("pipeline_class", ""),
                   doc.get("source", {}))

    def to_json(self) -> JsonObject:
        return {"name": self.name, "step": self.step, "fingerprint": self.fingerprint,
                "pipeline_class": self.pipeline_class, "source": self.source}


@dataclass(frozen=True)
class GeneratedPromptSet:
    """A prompt set as generated: its content fingerprint, size, and where its prompts come from."""

    fingerprint: str
    n: int
    version: str = ""
    source: str = ""  # a user set's prompt file: scoring reloads the prompts from it
    part_of: PartOf | None = None  # a subset (--limit, --subset): the whole set it was taken from

    @classmethod
    def of(cls, prompts: PromptSet) -> GeneratedPromptSet:
        return cls(prompts.fingerprint, len(prompts), prompts.version, prompts.source, prompts.part_of)

    @classmethod
    def from_json(cls, doc: JsonObject) -> GeneratedPromptSet:
        part_of = doc.get("part_of")
        return cls(doc["fingerprint"], doc["n"], doc.get("version", ""), doc.get("source", ""),
                   PartOf.from_json(part_of) if part_of else None)

    def to_json(self) -> JsonObject:
        doc = {"fingerprint": self.fingerprint, "n": self.n, "version": self.version, "source": self.source}
        return {**doc, "part_of": self.part_of.to_json()} if self.part_of is not None else doc


@dataclass(frozen=True)
class GenerationRecord:
    checkpoint: GeneratedCheckpoint
    protocol: JsonObject  # EffectiveProtocol.as_record(), fingerprint included
    prompt_sets: Mapping[str, GeneratedPromptSet]
    provenance: JsonObject = field(default_factory=dict)

    @property
    def protocol_fingerprint(self) -> str:
        return str(self.protocol["fingerprint"])

    def load_prompt_set(self, name: str) -> PromptSet:
        """The prompts of set `name` as generated: a built-in set, or a user set from its recorded file."""
        if name in builtin_names():
            return load_prompt_set(name)
        recorded = self.prompt_sets.get(name)
        if recorded is None or not recorded.source:
            raise EvalkitError(f"prompt set {name!r} is neither built in nor recorded with a source file",
                               "re-generate with a current evalkit, which records prompt files")
        return load_prompt_set(recorded.source)

    @classmethod
    def from_json(cls, doc: JsonObject) -> GenerationRecord:
        """`doc` must have passed the schema (`StepDir.read_generation` checks it first)."""
        return cls(GeneratedCheckpoint.from_json(doc["checkpoint"]), doc["protocol"],
                   {name: GeneratedPromptSet.from_json(s) for name, s in doc["prompt_sets"].items()},
                   doc.get("provenance", {}))

    def to_json(self) -> JsonObject:
        return {"schema": GENERATION_SCHEMA, "checkpoint": self.checkpoint.to_json(), "protocol": self.protocol,
                "prompt_sets": {name: s.to_json() for name, s in self.prompt_sets.items()},
                "provenance": self.provenance}
