"""A metric's stored records grouped by prompt: the unit that intervals and paired checks resample.

Also writes them, reduced to per-prompt numerators and denominators, to a small sidecar
next to the records (scores/<metric>/<fp16>.units.json), so `check`, curves and the site
can recompute intervals and paired differences without loading any metric model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import EvalkitError
from evalkit.fileio.jsonfile import read_json_document
from evalkit.fileio.pngio import write_atomic
from evalkit.generation.manifest import ManifestRow
from evalkit.generation.record import GenerationRecord
from evalkit.metrics.api import Ratio, Record
from evalkit.prompts.sets import Prompt
from evalkit.scoring.engine import image_items
from evalkit.scoring.store import ScoreStore
from evalkit.stepdir import StepDir

UNITS_SCHEMA = "evalkit.prompt-units/1"
RESCORE = "re-run `evalkit score` on that step folder"


@dataclass(frozen=True)
class PromptGroups:
    """Records per prompt, prompts in prompt-id order (the same order in every run of a set)."""

    prompts: tuple[Prompt, ...]
    groups: tuple[tuple[Record, ...], ...]
    tag_kinds: tuple[str, ...]

    @property
    def prompt_ids(self) -> list[str]:
        return [p.id for p in self.prompts]


def prompt_groups(step_dir: Path, metric: str, fingerprint: str, prompt_set: str) -> PromptGroups:
    folder = StepDir(step_dir)
    return group_records(step_dir, folder.read_generation(), folder.read_manifest(), metric, fingerprint,
                         prompt_set)


def group_records(step_dir: Path, record: GenerationRecord, manifest: dict[str, ManifestRow], metric: str,
                  fingerprint: str, prompt_set: str) -> PromptGroups:
    """As prompt_groups, with generation.json and the manifest already read (one read for all metrics)."""
    items = image_items(step_dir, record, manifest, prompt_set, metric)
    stored = ScoreStore(step_dir, metric, fingerprint).scored()
    missing = [it.file for it in items if (it.file, it.sha256) not in stored]
    if missing:
        raise EvalkitError(f"{step_dir}: {len(missing)} image(s) have no {metric} records (e.g. {missing[0]})",
                           f"run `evalkit score {step_dir} --metrics {metric}` first")
    by_prompt: dict[str, tuple[Prompt, list[Record]]] = {}
    for it in items:
        by_prompt.setdefault(it.prompt.id, (it.prompt, []))[1].extend(stored[(it.file, it.sha256)])
    ordered = sorted(by_prompt.values(), key=lambda pair: pair[0].id)
    kinds = record.load_prompt_set(prompt_set).tag_kinds
    return PromptGroups(tuple(p for p, _ in ordered), tuple(tuple(g) for _, g in ordered), kinds)


def tag_categories(groups: PromptGroups) -> dict[str, dict[str, list[int]]]:
    """group → category → prompt positions, from tags (positional kinds when the set declares them)."""
    found: dict[str, dict[str, list[int]]] = {}
    for index, prompt in enumerate(groups.prompts):
        for position, tag in enumerate(prompt.tags):
            kind = groups.tag_kinds[position] if position < len(groups.tag_kinds) else "tag"
            found.setdefault(kind, {}).setdefault(str(tag), []).append(index)
    return found


@dataclass(frozen=True)
class PromptUnits:
    """A metric's per-prompt sidecar (scores/<metric>/<fp16>.units.json): prompt ids and tags in
    prompt-id order, and per-prompt numerators and denominators where the metric is a ratio over
    prompts (run.json's interval and `check`'s paired bootstrap resample those); empty `ratios` for
    metrics that `check` must re-create instead (FID)."""

    metric: str
    fingerprint: str
    prompt_ids: tuple[str, ...]
    tags: tuple[tuple[str, ...], ...]
    tag_kinds: tuple[str, ...]
    ratios: Mapping[str, Ratio]

    @property
    def is_ratio(self) -> bool:
        """Written for a RATIO metric (evalkit.results.resampling): its value's ratio is recorded."""
        return "value" in self.ratios

    def value_ratio(self) -> tuple[np.ndarray, np.ndarray]:
        num, den = self.ratios["value"]
        return np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)

    @classmethod
    def from_groups(cls, metric: str, fingerprint: str, groups: PromptGroups,
                    ratios: Mapping[str, Ratio]) -> PromptUnits:
        return cls(metric, fingerprint, tuple(groups.prompt_ids), tuple(tuple(p.tags) for p in groups.prompts),
                   tuple(groups.tag_kinds), dict(sorted(ratios.items())))

    @classmethod
    def from_json(cls, doc: dict[str, Any], path: Path) -> PromptUnits:
        """`doc` as read by `read_json_document`; anything of the wrong shape is one line naming `path`."""
        try:
            ids, ratios = doc["prompt_ids"], doc["ratios"]
            if not (isinstance(ids, list) and all(isinstance(i, str) for i in ids) and isinstance(ratios, dict)):
                raise TypeError("prompt_ids is not a list of strings or ratios is not an object")
            parsed: dict[str, Ratio] = {}
            for key, ratio in ratios.items():
                num, den = ratio["num"], ratio["den"]
                if not (_numbers(num) and _numbers(den) and len(num) == len(den) == len(ids)):
                    raise ValueError(f"ratios.{key} does not hold one numerator and one denominator per prompt")
                parsed[key] = (num, den)
            return cls(str(doc["metric"]), str(doc["fingerprint"]), tuple(ids),
                       tuple(tuple(t) for t in doc.get("tags", [])), tuple(doc.get("tag_kinds", [])), parsed)
        except (KeyError, TypeError, ValueError) as e:
            raise EvalkitError(f"{path} is garbled ({e})", RESCORE) from e

    def to_json(self) -> dict[str, Any]:
        return {"schema": UNITS_SCHEMA, "metric": self.metric, "fingerprint": self.fingerprint,
                "prompt_ids": list(self.prompt_ids), "tags": [list(t) for t in self.tags],
                "tag_kinds": list(self.tag_kinds),
                "ratios": {key: {"num": list(num), "den": list(den)} for key, (num, den) in self.ratios.items()}}


def _numbers(values: Any) -> bool:
    return isinstance(values, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def write_units(step_dir: Path, metric: str, fingerprint: str, groups: PromptGroups,
                ratios: dict[str, Ratio]) -> Path:
    """`ratios` empty for metrics that are not ratios over prompts (FID): check re-creates those."""
    units = PromptUnits.from_groups(metric, fingerprint, groups, ratios)
    path = StepDir(step_dir).scores(metric, fingerprint).units
    write_atomic(path, (json.dumps(units.to_json(), sort_keys=True) + "\n").encode("utf-8"))
    return path


def read_units(path: Path) -> PromptUnits:
    return PromptUnits.from_json(read_json_document(path, "schema", UNITS_SCHEMA, RESCORE), path)
