"""Per-metric regression margins for `evalkit check`: a shipped YAML file, overridden by flags.

A margin is the largest worsening still accepted, in the metric's own units: `max_drop` for
metrics where higher is better, `max_rise` where lower is better. Stating the direction in the
name (rather than a signed number) lets check refuse a margin whose direction contradicts the
metric's `higher_is_better`, which is the usual way such a file goes silently wrong.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from evalkit.errors import EvalkitError
from evalkit.runtime.datafiles import shipped_dir

THRESHOLDS_SCHEMA = "evalkit.thresholds/1"
DEFAULT_CONFIDENCE = 0.95
KINDS = ("max_drop", "max_rise")


def default_thresholds_path() -> Path:
    return shipped_dir("metrics") / "thresholds" / "default.yaml"


@dataclass(frozen=True)
class Threshold:
    metric: str
    kind: str  # "max_drop" (higher is better) or "max_rise" (lower is better)
    margin: float  # >= 0, in the metric's units
    source: str  # the file it came from, or "--max-drop"/"--max-rise"

    def describe(self) -> str:
        return f"{'drop' if self.kind == 'max_drop' else 'rise'} ≤ {self.margin:g}"

    def check_direction(self, higher_is_better: bool) -> None:
        wanted = "max_drop" if higher_is_better else "max_rise"
        if self.kind != wanted:
            better = "higher" if higher_is_better else "lower"
            raise EvalkitError(f"{self.source} gives {self.metric} a {self.kind} margin, but {better} is better for "
                               f"{self.metric}", f"use {wanted.replace('_', '-')} for it")


@dataclass(frozen=True)
class Thresholds:
    confidence: float
    by_metric: Mapping[str, Threshold]
    source: str


def load_thresholds(path: Path | None) -> Thresholds:
    """The thresholds file (the shipped default when `path` is None), validated."""
    path = default_thresholds_path() if path is None else Path(path).expanduser()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise EvalkitError(f"thresholds file {path} does not exist", "give --thresholds PATH to a YAML file") from e
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EvalkitError(f"thresholds file {path} is unreadable ({first})", "fix the YAML") from e
    hint = f"see {default_thresholds_path()} for the layout"
    if not isinstance(raw, dict) or raw.get("schema", THRESHOLDS_SCHEMA) != THRESHOLDS_SCHEMA:
        raise EvalkitError(f"{path} is not an {THRESHOLDS_SCHEMA} thresholds file", hint)
    metrics = raw.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise EvalkitError(f"{path}: `metrics` must map metric names to margins", hint)
    unknown_keys = sorted(set(raw) - {"schema", "confidence", "metrics"})
    if unknown_keys:
        raise EvalkitError(f"{path}: unknown key(s) {', '.join(unknown_keys)}", hint)
    by_metric = {}
    for name, spec in metrics.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise EvalkitError(f"{path}: metrics.{name} must be {{max_drop: X}} or {{max_rise: X}} (got {spec!r})",
                               hint)
        kind, value = next(iter(spec.items()))
        by_metric[str(name)] = Threshold(str(name), kind, _margin(value, f"{path}: metrics.{name}.{kind}"), str(path))
    confidence = confidence_level(raw.get("confidence", DEFAULT_CONFIDENCE), f"{path}: confidence")
    return Thresholds(confidence, by_metric, str(path))


def with_overrides(base: Thresholds, max_drop: Iterable[str], max_rise: Iterable[str],
                   confidence: float | None) -> Thresholds:
    """Flags win over the file, per metric; `--confidence` over the file's level."""
    by_metric = dict(base.by_metric)
    for kind, values in (("max_drop", max_drop), ("max_rise", max_rise)):
        flag = "--" + kind.replace("_", "-")
        for text in values:
            name, _, number = text.partition("=")
            if not name.strip() or not number.strip():
                raise EvalkitError(f"{flag} {text!r} is not of the form METRIC=MARGIN", f"e.g. {flag} tifa=0.01")
            by_metric[name.strip()] = Threshold(name.strip(), kind, _margin(number.strip(), f"{flag} {text}"), flag)
    level = base.confidence if confidence is None else confidence_level(confidence, "--confidence")
    return Thresholds(level, by_metric, base.source)


def flagged(thresholds: Thresholds) -> list[str]:
    """Metrics whose margin the user gave on the command line (they must exist in both runs)."""
    return sorted(name for name, t in thresholds.by_metric.items() if t.source.startswith("--"))


def confidence_level(value: Any, where: str) -> float:
    try:
        level = float(value)
    except (TypeError, ValueError) as e:
        raise EvalkitError(f"{where} {value!r} is not a number", "e.g. 0.95") from e
    if not 0.5 < level < 1.0:
        raise EvalkitError(f"{where} must lie strictly between 0.5 and 1 (got {level})", "e.g. 0.95")
    return level


def _margin(value: Any, where: str) -> float:
    try:
        margin = float(value)
    except (TypeError, ValueError) as e:
        raise EvalkitError(f"{where}: {value!r} is not a number", "margins are numbers in the metric's units") from e
    if isinstance(value, bool) or not math.isfinite(margin) or margin < 0:
        raise EvalkitError(f"{where}: the margin must be a finite number >= 0 (got {value!r})",
                           "0 fails on any demonstrated worsening")
    return margin
