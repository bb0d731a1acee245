"""What `evalkit metrics list` shows: each metric, what it scores, its reference models, and
whether it can run here without a download — answered from cards and the local caches only,
so listing never imports a model library or touches the network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evalkit.metrics.cards import MetricCard, ModelRef, shipped_cards
from evalkit.metrics.registry import BUILTINS, available, card_of
from evalkit.runtime.assets import is_cached
from evalkit.runtime.extras import installed


@dataclass(frozen=True)
class MetricListing:
    name: str
    origin: str  # "card clip.yaml", "plugin pkg.module:Factory"
    implementation: str = ""
    prompt_set: str = ""
    higher_is_better: bool | None = None
    models: tuple[str, ...] = ()  # "source" (or "source@revision" when pinned)
    missing: tuple[str, ...] = ()  # what is not available locally, each with how to get it


def listings() -> list[MetricListing]:
    cards = shipped_cards()
    return [_card_listing(name, origin, cards[name]) if name in cards else MetricListing(name, origin)
            for name, origin in available().items()]


def _card_listing(name: str, origin: str, card: MetricCard) -> MetricListing:
    missing = [m for m in (_model_missing(ref) for ref in card.models) if m]
    row = BUILTINS.get(card.implementation)
    if row is not None:
        missing = [f"pip install 'evalkit[{extra}]'" for extra in row.extras if not installed(extra)] + missing
        values = row.values(card)
        missing += [f"put the {param} file at {values[param]}" for param in row.local_files
                    if not Path(str(values[param])).expanduser().is_file()]
        for param in row.card_refs:  # what the named card needs, this one needs too
            other = card_of(str(values[param]))
            missing += [f"{other.name}: {m}" for m in _card_listing(other.name, "", other).missing
                        if not m.startswith("pip install")]
    models = tuple(ref.source + (f"@{ref.revision}" if ref.revision != "main" else "") for ref in card.models)
    return MetricListing(name, origin, card.implementation, card.prompt_set, card.higher_is_better, models,
                         tuple(missing))


def _model_missing(ref: ModelRef) -> str:
    """"" when the model is here (a local folder, or the hub snapshot in the cache)."""
    path = Path(ref.source).expanduser()
    if path.is_absolute() or ref.source.startswith("."):
        return "" if path.is_dir() else f"{ref.role} folder {ref.source} missing"
    return "" if is_cached(ref.source, ref.revision) else f"hf download {ref.source} --revision {ref.revision}"
