"""Metric names → metric objects: shipped cards, card files, and third-party plugins.

Third-party metrics register a zero-argument factory (or a class) under the
`evalkit.metrics` entry-point group and go through exactly the same scoring path.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.metrics.api import Metric
from evalkit.metrics.cards import MetricCard, read_card, shipped_cards
from evalkit.metrics.options import MetricOptions

ENTRY_POINT_GROUP = "evalkit.metrics"


def implementations() -> dict[str, Callable[[MetricCard, MetricOptions], Metric]]:
    """Built-in implementations a card's `implementation:` may name."""
    from evalkit.metrics.clip_score import ClipScore
    from evalkit.metrics.fid import FID
    from evalkit.metrics.hpsv2 import HPSv2
    from evalkit.metrics.imagereward import ImageReward
    from evalkit.metrics.tifa.metric import TifaMetric

    return {"clip_score": lambda card, options: ClipScore(card), "tifa": TifaMetric,
            "imagereward": lambda card, options: ImageReward(card), "hpsv2": lambda card, options: HPSv2(card),
            "fid": lambda card, options: FID(card, options)}


def plugin_entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available() -> dict[str, str]:
    """name → where it comes from, for `evalkit metrics list` and did-you-mean."""
    names = {name: f"card {Path(card.path).name}" for name, card in shipped_cards().items()}
    for name, ep in plugin_entry_points().items():
        names.setdefault(name, f"plugin {ep.value}")
    return dict(sorted(names.items()))


def create(spec: str, options: MetricOptions = MetricOptions()) -> Metric:  # noqa: B008 - frozen value
    """A metric from a shipped card name, a card file (.yaml), or a plugin name."""
    if spec.endswith((".yaml", ".yml")):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise EvalkitError(f"metric card {spec} does not exist", "give a path to a card YAML or a metric name")
        return _from_card(read_card(path), options)
    cards = shipped_cards()
    if spec in cards:
        return _from_card(cards[spec], options)
    plugins = plugin_entry_points()
    if spec in plugins:
        return _from_plugin(spec, plugins[spec])
    known = list(available())
    close = difflib.get_close_matches(spec, known, n=1)
    raise EvalkitError(f"unknown metric {spec!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
                       "available: " + ", ".join(known) + " (evalkit metrics list)")


def create_many(specs: str, options: MetricOptions = MetricOptions()) -> list[Metric]:  # noqa: B008
    names = [s.strip() for s in specs.split(",") if s.strip()]
    if not names:
        raise EvalkitError("--metrics names no metric", "e.g. --metrics clip (evalkit metrics list)")
    metrics = [create(n, options) for n in names]
    seen: set[str] = set()
    for m in metrics:
        if m.info.name in seen:
            raise EvalkitError(f"metric {m.info.name!r} is named twice", "name each metric once")
        seen.add(m.info.name)
    return metrics


def _from_card(card: MetricCard, options: MetricOptions) -> Metric:
    factories = implementations()
    if card.implementation not in factories:
        raise EvalkitError(f"metric card {card.name!r} names unknown implementation {card.implementation!r}",
                           "built-in implementations: " + ", ".join(factories))
    return factories[card.implementation](card, options)


def _from_plugin(name: str, ep: metadata.EntryPoint) -> Metric:
    try:
        factory = ep.load()
        metric = factory()
    except Exception as e:  # a broken plugin must not take evalkit down with a traceback
        raise EvalkitError(f"metric plugin {name!r} ({ep.value}) failed to load: {e}",
                           "fix or uninstall the plugin package") from e
    if not isinstance(metric, Metric):
        raise EvalkitError(f"metric plugin {name!r} does not implement the evalkit Metric protocol",
                           "see evalkit/metrics/api.py")
    return metric
