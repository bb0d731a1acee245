"""The judge-agreement report: Markdown for people and CI comments, JSON for tools."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from evalkit.judge.agreement import KINDS, Agreement
from evalkit.judge.annotations import Annotations
from evalkit.results.bootstrap import BootstrapSpec

SCHEMA = "evalkit.judge-agreement/1"


def to_json(published: Sequence[Agreement], validated: Sequence[Agreement], spec: BootstrapSpec,
            annotations: Annotations) -> dict[str, Any]:
    return {"schema": SCHEMA,
            "annotations": {"source": annotations.source, "sha256": annotations.sha256,
                            "n_images": len(annotations.images)},
            "bootstrap": spec.describe("prompt"),
            "published": [a.to_json() for a in published], "validated": [a.to_json() for a in validated]}


def markdown(published: Sequence[Agreement], validated: Sequence[Agreement], spec: BootstrapSpec,
             annotations: Annotations) -> str:
    lines = [f"### Judge agreement with the human ratings of {annotations.source.rsplit('/', 1)[-1]}", "",
             "| judge | Pearson | Spearman | Kendall τ-b | images | prompts |", "|---|---:|---:|---:|---:|---:|"]
    for agreement, mark in [(a, "**") for a in validated] + [(a, "") for a in published]:
        cells = [_cell(agreement, kind) for kind in KINDS]
        lines.append(f"| {mark}{agreement.description}{mark} | " + " | ".join(cells)
                     + f" | {agreement.n_images} | {agreement.n_prompts} |")
    lines += ["", f"Correlation of each judge's per-image score with the mean of two annotators' 1-5 ratings, over "
              f"the images both have; [95% interval] from a percentile bootstrap over prompts ({spec.resamples} "
              f"resamples, seed {spec.seed}). Published rows are computed from the judges' scores in the "
              f"annotation file ({annotations.source}, sha256 {annotations.sha256[:12]}); bold rows were scored "
              f"here."]
    return "\n".join(lines) + "\n"


def _cell(agreement: Agreement, kind: str) -> str:
    c = agreement.correlations[kind]
    if not math.isfinite(c.value):
        return "—"
    low, high = c.ci95
    interval = f" [{low:.3f}, {high:.3f}]" if math.isfinite(low) and math.isfinite(high) else ""
    return f"{c.value:.3f}{interval}"
