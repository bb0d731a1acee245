"""Metric cards: one small YAML per named metric configuration.

A card pins what a configuration computes with — implementation, model ids + revisions,
preprocessing, scale, prompt set — so `--metrics clip` always means the same numbers, and
variants (e.g. a ViT-B/32 Hessel-style CLIP score) are selectable by name. The card's
content is part of the metric's fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_json
from evalkit.fileio.safenames import require_folder_name
from evalkit.fileio.schemacheck import schema_problem
from evalkit.runtime.datafiles import shipped_dir

REQUIRED = ("name", "implementation", "prompt_set", "higher_is_better")
CARD_SCHEMA = Path(__file__).parent / "schemas" / "card.schema.json"  # the types of every field a card may set


@dataclass(frozen=True)
class ModelRef:
    """A model a metric loads: a hub id at a revision, or a local folder."""

    role: str
    source: str
    revision: str = "main"


@dataclass(frozen=True)
class MetricCard:
    name: str
    implementation: str
    prompt_set: str
    higher_is_better: bool
    display_name: str = ""
    description: str = ""
    models: tuple[ModelRef, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    path: str = ""  # where the card was read from (not part of the fingerprint)
    # The metric a board ranks by and shows first when no --by is given (TIFA, the study's headline).
    # Presentation only: not part of the fingerprint, so declaring it never invalidates stored scores.
    headline: bool = False

    def model(self, role: str) -> ModelRef:
        for ref in self.models:
            if ref.role == role:
                return ref
        raise EvalkitError(f"metric card {self.name!r} names no {role!r} model", "add it under models:")

    def content(self) -> dict[str, Any]:
        return {"name": self.name, "implementation": self.implementation, "prompt_set": self.prompt_set,
                "higher_is_better": self.higher_is_better,
                "models": [[m.role, m.source, m.revision] for m in self.models], "params": self.params}

    def fingerprint(self) -> str:
        return sha256_json(self.content())

    def metric_fingerprint(self, version: str, **parts: Any) -> str:
        """A metric's fingerprint: this card and the implementation's version, plus what else changes its
        numbers (`parts`: weights hashes, library versions, options). Stored scores are keyed by it."""
        return sha256_json({"card": self.fingerprint(), "version": version, **parts})


def read_card(path: Path) -> MetricCard:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise EvalkitError(f"metric card {path} is unreadable ({str(e).splitlines()[0]})",
                           "fix the YAML or remove the file") from e
    if not isinstance(raw, dict):
        raise EvalkitError(f"metric card {path} is not a mapping", "see metrics/clip.yaml for the layout")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise EvalkitError(f"metric card {path} lacks {', '.join(missing)}", "see metrics/clip.yaml for the layout")
    require_folder_name(f"metric card {path}: metric", str(raw["name"]), "give the metric a plain name in its card")
    problem = schema_problem(raw, CARD_SCHEMA)
    if problem is not None:
        raise EvalkitError(f"metric card {path} is garbled: {problem}", "see metrics/clip.yaml for the layout")
    models = tuple(
        ModelRef(role=str(role), source=str(spec["source"]), revision=str(spec.get("revision", "main")))
        for role, spec in (raw.get("models") or {}).items()
    )
    return MetricCard(
        name=str(raw["name"]), implementation=str(raw["implementation"]), prompt_set=str(raw["prompt_set"]),
        higher_is_better=bool(raw["higher_is_better"]), display_name=str(raw.get("display_name", raw["name"])),
        description=str(raw.get("description", "")), models=models, params=dict(raw.get("params") or {}),
        path=str(path), headline=bool(raw.get("headline", False)),
    )


def shipped_cards() -> dict[str, MetricCard]:
    cards = {}
    for path in sorted(shipped_dir("metrics").glob("*.yaml")):
        card = read_card(path)
        cards[card.name] = card
    return cards
