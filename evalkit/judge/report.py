"""The judge-agreement report: Markdown for people and CI comments, JSON for tools."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.judge.agreement import KINDS, Agreement, agreement
from evalkit.judge.annotations import PUBLISHED_JUDGES, Annotations
from evalkit.judge.validate import JudgedImage
from evalkit.results.bootstrap import BootstrapSpec

SCHEMA = "evalkit.judge-agreement/1"


@dataclass(frozen=True)
class Validated:
    """A judge scored here, on the images `judged` (each carries its rating)."""

    name: str
    description: str
    judged: Sequence[JudgedImage]


@dataclass(frozen=True)
class JudgeReport:
    """Published judges' rows (from `published_from`'s judge columns) beside the judges scored here (against
    `rated`'s ratings). The two files are one file except where ratings are stand-ins, as in the demo;
    `note` then says so at the top of both outputs."""

    published: list[Agreement]
    validated: list[Agreement]
    spec: BootstrapSpec
    published_from: Annotations
    rated: Annotations
    note: str = ""


def build_report(published_from: Annotations, rated: Annotations, validated: Sequence[Validated],
                 spec: BootstrapSpec, note: str = "") -> JudgeReport:
    rows = published_from.images
    published = [agreement(judge, description, [r.published[judge] for r in rows], [r.human for r in rows],
                           [r.prompt_id for r in rows], spec)
                 for judge, description in PUBLISHED_JUDGES.items() if all(judge in r.published for r in rows)]
    ours = [agreement(v.name, v.description, [j.score for j in v.judged], [j.image.human for j in v.judged],
                      [j.image.prompt_id for j in v.judged], spec) for v in validated]
    return JudgeReport(published, ours, spec, published_from, rated, note)


def _source(annotations: Annotations) -> dict[str, Any]:
    return {"source": annotations.source, "sha256": annotations.sha256, "n_images": len(annotations.images)}


def to_json(report: JudgeReport) -> dict[str, Any]:
    doc: dict[str, Any] = {"schema": SCHEMA, "annotations": _source(report.rated)}
    if report.published_from != report.rated:
        doc["published_annotations"] = _source(report.published_from)
    if report.note:
        doc["note"] = report.note
    return {**doc, "bootstrap": report.spec.describe("prompt"),
            "published": [a.to_json() for a in report.published],
            "validated": [a.to_json() for a in report.validated]}


def markdown(report: JudgeReport) -> str:
    published, validated, spec = report.published, report.validated, report.spec
    annotations, source = report.rated, report.published_from
    lines = [f"### Judge agreement with the human ratings of {annotations.source.rsplit('/', 1)[-1]}", ""]
    if report.note:
        lines += [f"> **{report.note}**", ""]
    lines += ["| judge | Pearson | Spearman | Kendall τ-b | images | prompts |", "|---|---:|---:|---:|---:|---:|"]
    for row, mark in [(a, "**") for a in validated] + [(a, "") for a in published]:
        cells = [_cell(row, kind) for kind in KINDS]
        lines.append(f"| {mark}{row.description}{mark} | " + " | ".join(cells)
                     + f" | {row.n_images} | {row.n_prompts} |")
    lines += ["", f"Correlation of each judge's per-image score with the mean of two annotators' 1-5 ratings, over "
              f"the images both have; [95% interval] from a percentile bootstrap over prompts ({spec.resamples} "
              f"resamples, seed {spec.seed}). Published rows are computed from the judges' scores in the "
              f"annotation file ({source.source}, sha256 {source.sha256[:12]}); bold rows were scored here"
              + ("." if source == annotations else
                 f", against the ratings in {annotations.source} (sha256 {annotations.sha256[:12]}).")]
    return "\n".join(lines) + "\n"


def _cell(agreement: Agreement, kind: str) -> str:
    c = agreement.correlations[kind]
    if not math.isfinite(c.value):
        return "—"
    low, high = c.ci95
    interval = f" [{low:.3f}, {high:.3f}]" if math.isfinite(low) and math.isfinite(high) else ""
    return f"{c.value:.3f}{interval}"


def write_report_files(report: JudgeReport, markdown_path: Path | None, json_path: Path | None) -> str:
    """The Markdown text; each path given gets its output."""
    from evalkit.fileio.reports import write_report

    text = markdown(report)
    for path, content in ((markdown_path, text), (json_path, json.dumps(to_json(report), indent=2) + "\n")):
        if path is not None:
            write_report(path, content)
    return text
