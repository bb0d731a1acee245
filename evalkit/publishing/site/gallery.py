"""Galleries: the same prompts across models (or steps) side by side, with per-image scores.

Reads the files the pipeline wrote into each step folder: `manifest*.jsonl` rows say which
image shows which (prompt set, prompt id, k); `scores/<metric>/<fp16>.jsonl` (named by
run.json's `metrics.<m>.records`) holds each image's records. Images are downscaled into the
site (content-addressed by their sha256, so one image used twice is stored once), up to a
fixed number per site so a gallery of a 10k-prompt run stays small.

Prompt texts are not in the step folder; they come from the prompt set the images were made
from (a built-in set by name, or the user file generation.json names) and are shown only when
their sha256 equals the manifest's `prompt_sha256`, i.e. when it is provably the text used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_bytes
from evalkit.fileio.jsonl import read_rows
from evalkit.generation.manifest import ManifestRow
from evalkit.publishing.entry import Entry
from evalkit.results.recordview import RecordView
from evalkit.stepdir import StepDir

IMAGE_DIR = "img"


RECORDS_PER_IMAGE = 40  # records listed per image and metric (TIFA asks ~6 questions; the rest are counted)


@dataclass(frozen=True)
class RecordRow:
    """One per-image record as the site lists it."""

    kind: str  # its value of the view's filter field ("" without a filter)
    passed: bool | None  # the score field when it is a bool (a TIFA question answered right)
    fields: list[tuple[str, str]]  # (label, text) in the view's order


@dataclass
class CellScore:
    """One metric's score of one image, with its records when the metric's view lists fields."""

    metric: str
    score: str  # formatted
    count: int  # records the score is the mean of
    unit: str = ""
    records: list[RecordRow] = field(default_factory=list)

    @property
    def passed(self) -> int | None:
        """How many listed records passed, when the score field is a bool."""
        flags = [r.passed for r in self.records if r.passed is not None]
        return sum(flags) if flags else None


@dataclass
class Cell:
    src: str = ""  # relative to the site root; empty when there is no image to show
    width: int = 0
    height: int = 0
    scores: list[CellScore] = field(default_factory=list)
    note: str = ""


@dataclass
class GalleryRow:
    prompt_set: str
    prompt_id: str
    text: str
    cells: list[Cell]


@dataclass
class Column:
    label: str
    href: str  # model page, relative to the site root ("" for none)
    entry: Entry


@dataclass
class Gallery:
    columns: list[Column]
    rows: list[GalleryRow]

    def filter_data(self) -> list[dict[str, str]]:
        """What the page's prompt filter searches, as JSON data (never as markup)."""
        return [{"set": r.prompt_set, "id": r.prompt_id, "text": r.text} for r in self.rows]

    def record_kinds(self) -> list[str]:
        """The filter values (TIFA's element types) of the records listed anywhere in the gallery."""
        return sorted({r.kind for row in self.rows for cell in row.cells for s in cell.scores for r in s.records
                       if r.kind})


class ImageCopier:
    """Downscaled copies of step-folder images inside the site, bounded in number."""

    def __init__(self, site_dir: Path, size: int, limit: int) -> None:
        self.site_dir, self.size, self.limit = site_dir, size, limit
        self.copied: dict[str, tuple[str, int, int]] = {}

    def copy(self, source: Path, sha256: str) -> tuple[str, int, int] | None:
        """(site-relative path, width, height), or None when missing, unreadable or over the limit."""
        if sha256 in self.copied:
            return self.copied[sha256]
        if len(self.copied) >= self.limit or not source.is_file():
            return None
        from PIL import Image, UnidentifiedImageError

        relative = f"{IMAGE_DIR}/{sha256[:20]}.jpg"
        target = self.site_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with Image.open(source) as image:
                image.thumbnail((self.size, self.size))
                image.convert("RGB").save(target, "JPEG", quality=85)
                width, height = image.size
        except (OSError, UnidentifiedImageError, ValueError):
            return None
        self.copied[sha256] = (relative, width, height)
        return self.copied[sha256]


class PromptTexts:
    """Prompt id -> text for the sets images were generated from, verified by text hash."""

    def __init__(self) -> None:
        self._sets: dict[tuple[str, str], dict[str, str] | None] = {}

    def text(self, step_dir: Path, prompt_set: str, prompt_id: str, prompt_sha256: str) -> str:
        texts = self._load(step_dir, prompt_set)
        text = (texts or {}).get(prompt_id)
        if text is not None and sha256_bytes(text.encode("utf-8")) == prompt_sha256:
            return text
        return ""

    def _load(self, step_dir: Path, prompt_set: str) -> dict[str, str] | None:
        try:
            record = StepDir(step_dir).read_generation()
        except EvalkitError:
            return None
        generated = record.prompt_sets.get(prompt_set)
        key = (prompt_set, generated.source if generated is not None else "")
        if key not in self._sets:
            try:
                self._sets[key] = {p.id: p.text for p in record.load_prompt_set(prompt_set).prompts}
            except (EvalkitError, OSError, ValueError):
                self._sets[key] = None
        return self._sets[key]


def manifest_rows(step_dir: Path) -> dict[tuple[str, str, int], ManifestRow]:
    """(prompt set, prompt id, k) -> manifest row, in the order images were planned."""
    return {(r.prompt_set, r.prompt_id, r.k): r for r in StepDir(step_dir).read_manifest().values()}


@dataclass(frozen=True)
class ImageScore:
    score: float
    count: int
    unit: str
    records: list[RecordRow]


def image_scores(records_path: Path, files: set[str], view: RecordView) -> dict[str, ImageScore]:
    """file -> its score (mean of its records' `view.score` field) and listed records, for the wanted files.

    Record files can be large (FID stores features per image), so lines that do not mention
    a wanted file are skipped before parsing; the latest line for a file wins, as in ScoreStore.
    """
    out: dict[str, ImageScore] = {}
    if not files:
        return out
    for row in read_rows(records_path, mentioning=files):
        file, records = row.get("file"), row.get("records")
        if not isinstance(file, str) or file not in files:
            continue
        records = [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []
        score = view.score_of(records)
        if score is None:
            out.pop(file, None)
            continue
        listed = [_record_row(r, view) for r in records[:RECORDS_PER_IMAGE]] if view.fields else []
        out[file] = ImageScore(score[0], score[1], view.unit, listed)
    return out


def _record_row(record: dict[str, Any], view: RecordView) -> RecordRow:
    passed = record.get(view.score)
    return RecordRow(str(record.get(view.filter, "")) if view.filter else "",
                     passed if isinstance(passed, bool) else None,
                     [(f.label, _text(record[f.key])) for f in view.fields if f.key in record])


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def build_gallery(columns: Sequence[Column], metric_names: Sequence[str], prompt_limit: int,
                  copier: ImageCopier, texts: PromptTexts) -> Gallery:
    """Up to `prompt_limit` prompts every column has an image for (k = 0), spread over the
    prompt sets the metrics score; one cell per column with the image and its scores."""
    steps = [c.entry.step_dir for c in columns]
    manifests = [manifest_rows(d) for d in steps]
    with_images = [m for m in manifests if m]
    if not with_images or prompt_limit <= 0:
        return Gallery(list(columns), [])
    common = [key for key in with_images[0] if key[2] == 0 and all(key in m for m in with_images[1:])]
    sets = [s for s in dict.fromkeys(_metric_sets(columns, metric_names)) if any(k[0] == s for k in common)]
    sets = sets or list(dict.fromkeys(k[0] for k in common))
    per_set = max(1, math.ceil(prompt_limit / max(len(sets), 1)))
    chosen = [k for s in sets for k in [k for k in common if k[0] == s][:per_set]][:prompt_limit]
    scores = [_column_scores(c, d, m, chosen, metric_names) for c, d, m in zip(columns, steps, manifests, strict=True)]
    rows = []
    for key in chosen:
        text = ""
        for step_dir, manifest in zip(steps, manifests, strict=True):
            if key in manifest:
                text = texts.text(step_dir, key[0], key[1], manifest[key].prompt_sha256)
                if text:
                    break
        cells = [_cell(step_dir, manifest.get(key), column_scores, copier)
                 for step_dir, manifest, column_scores in zip(steps, manifests, scores, strict=True)]
        rows.append(GalleryRow(key[0], key[1], text, cells))
    return Gallery(list(columns), rows)


def _metric_sets(columns: Sequence[Column], metric_names: Sequence[str]) -> list[str]:
    return [c.entry.metrics[m].prompt_set for m in metric_names for c in columns
            if m in c.entry.metrics and c.entry.metrics[m].prompt_set]


def _column_scores(column: Column, step_dir: Path, manifest: dict[tuple[str, str, int], ManifestRow],
                   chosen: list[tuple[str, str, int]], metric_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """metric -> file -> (score, count), for the chosen prompts of one column."""
    out: dict[str, dict[str, Any]] = {}
    for name in metric_names:
        metric = column.entry.metrics.get(name)
        if metric is None:
            continue
        files = {manifest[k].file for k in chosen if k in manifest and k[0] == metric.prompt_set}
        path = (step_dir / metric.records).resolve()
        if step_dir.resolve() in path.parents:  # a records path may not point outside its step folder
            out[name] = image_scores(path, files, metric.record_view)
    return out


def _cell(step_dir: Path, row: ManifestRow | None, scores: dict[str, dict[str, Any]], copier: ImageCopier) -> Cell:
    if row is None:
        return Cell(note="no image")
    cell = Cell()
    source = (step_dir / row.file).resolve()
    key = row.sha256 or sha256_bytes(str(source).encode("utf-8"))
    copied = copier.copy(source, key) if step_dir.resolve() in source.parents else None
    if copied is None:
        cell.note = "image not available"
    else:
        cell.src, cell.width, cell.height = copied
    for name, by_file in scores.items():
        if row.file in by_file:
            found: ImageScore = by_file[row.file]
            cell.scores.append(CellScore(name, f"{found.score:.4g}", found.count, found.unit, found.records))
    return cell
