"""Write the static leaderboard site: HTML pages, vendored CSS/JS, data files and thumbnails.

The site is self-contained (relative links only, no CDN, no server), so it works opened from
file:// and from any static host. It is built in a temporary sibling folder and swapped in
at the end, so a failed build leaves the previous site intact. A folder is only replaced when
it holds the marker file of an earlier build: `--out` can never wipe unrelated files.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from evalkit import __version__
from evalkit.errors import EvalkitError
from evalkit.publishing.entry import Entry
from evalkit.publishing.leaderboard import board_csv, leaderboard_document, read_document
from evalkit.publishing.site.gallery import Column, Gallery, ImageCopier, PromptTexts, build_gallery
from evalkit.publishing.site.views import (
    board_view,
    efficiency_view,
    group_models,
    model_slug,
    model_view,
    name_parts,
)
from evalkit.publishing.store import ENTRIES_FILE, dumps, find_run_files, load_entries, merge_entries
from evalkit.results.curves import Series, read_curve
from evalkit.results.run import read_run
from evalkit.stepdir import StepDir

PACKAGE_DIR = Path(__file__).parent
MARKER = ".evalkit-site"
# The site loads only its own files: no inline or foreign script, style, frame or form target, so
# a user-supplied string that escaped rendering still could not run. Images may be data: URIs.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "object-src 'none'; frame-src 'none'; base-uri 'none'; form-action 'none'")
STEP_GALLERY_COLUMNS = 6


@dataclass(frozen=True)
class SiteOptions:
    select: str = ""  # "" = what leaderboard.json was written with, else latest
    by: str = ""
    gallery_prompts: int = 8
    gallery_columns: int = 8
    thumb_size: int = 256
    max_images: int = 400


@dataclass
class SiteResult:
    out: Path
    pages: int
    images: int
    boards: int
    models: int


def collect_entries(leaderboard: Path | None, runs: Sequence[Path]) -> tuple[list[Entry], dict[str, Any] | None]:
    """The store's entries plus RUNS merged over them in memory (the store is not written)."""
    stored: list[Entry] = []
    previous = None
    if leaderboard is not None and (Path(leaderboard) / ENTRIES_FILE).is_file():
        stored = load_entries(leaderboard)
        previous = read_document(leaderboard)
    incoming = [Entry.from_run(read_run(p), p) for p in find_run_files(runs)] if runs else []
    entries, _ = merge_entries(stored, incoming)
    if not entries:
        where = f"{leaderboard}/{ENTRIES_FILE}" if leaderboard is not None else "the leaderboard"
        raise EvalkitError(f"nothing to show: no entries in {where} and no run.json under the given RUNS",
                           "run `evalkit leaderboard RUNS` first, or pass run folders to `evalkit site`")
    return entries, previous


def build_site(out: Path, leaderboard: Path | None, runs: Sequence[Path], options: SiteOptions) -> SiteResult:
    entries, previous = collect_entries(leaderboard, runs)
    previous = previous or {}
    # Without --select, the site shows what `evalkit leaderboard` chose (select and --by together).
    select = options.select or previous.get("select") or "latest"
    by = options.by or ("" if options.select else previous.get("by") or "")
    out = Path(out)
    document = leaderboard_document(entries, out, select, by)  # rows name runs relative to the site
    _check_target(out)
    staging = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        result = _write(staging, entries, document, options)
        _swap(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.out = out
    return result


def _check_target(out: Path) -> None:
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file()):
        raise EvalkitError(f"{out} exists and is not a site evalkit built", "choose a new or empty folder for --out")


def _swap(staging: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(PACKAGE_DIR / "templates"), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.globals["version"] = __version__
    env.globals["content_security_policy"] = CONTENT_SECURITY_POLICY
    env.filters["name_parts"] = name_parts  # long model names break after separators, never mid-word
    return env


def _write(site: Path, entries: list[Entry], document: dict[str, Any], options: SiteOptions) -> SiteResult:
    env = _environment()
    shutil.copytree(PACKAGE_DIR / "static", site / "static")
    (site / MARKER).write_text("built by evalkit site\n", encoding="utf-8")
    data = site / "data"
    data.mkdir()
    (data / "leaderboard.json").write_text(dumps(document), encoding="utf-8")
    for board in document["boards"]:
        (data / f"{board['id']}.csv").write_text(board_csv(board), encoding="utf-8")

    models = group_models(entries)
    slugs = {name: model_slug(name) for name in models}
    boards = [board_view(b, slugs) for b in document["boards"]]
    copier = ImageCopier(site, options.thumb_size, options.max_images)
    texts = PromptTexts()
    pages = 0

    def render(name: str, template: str, root: str, **context: Any) -> None:
        nonlocal pages
        path = site / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(env.get_template(template).render(root=root, **context), encoding="utf-8")
        pages += 1

    render("index.html", "index.html", "", page="leaderboard", boards=boards, document=document,
           models=[{"name": n, "href": f"models/{slugs[n]}.html", "steps": len(e)} for n, e in models.items()])
    galleries = []
    for board in document["boards"]:
        rows = board["rows"][:options.gallery_columns]
        columns = [Column(f"{r['model']}@{r['step_label']}", f"models/{slugs[r['model']]}.html",
                          _entry_for(models[r["model"]], r, board)) for r in rows]
        gallery = build_gallery(columns, [m["name"] for m in board["metrics"]], options.gallery_prompts, copier, texts)
        galleries.append({"board": board, "gallery": gallery})
    render("gallery.html", "gallery.html", "", page="gallery", galleries=galleries)
    efficiency = [v for v in (efficiency_view(b, slugs) for b in document["boards"]) if v is not None]
    render("efficiency.html", "efficiency.html", "", page="efficiency", views=efficiency)
    for name, model_entries in models.items():
        view = model_view(name, model_entries, document["boards"], stored_curves(model_entries))
        shown = _spread(model_entries, STEP_GALLERY_COLUMNS)
        step_gallery: Gallery | None = None
        if shown:  # one step: its images and per-image records; several: side by side
            columns = [Column(f"step {e.step_label}", "", e) for e in shown]
            step_gallery = build_gallery(columns, view["metric_names"], options.gallery_prompts, copier, texts)
        render(f"models/{slugs[name]}.html", "model.html", "../", page="model", model=view, gallery=step_gallery)
    return SiteResult(site, pages, len(copier.copied), len(document["boards"]), len(models))


def stored_curves(entries: list[Entry]) -> dict[str, list[Series]]:
    """metric -> the series of the curve files in the model folders of the entries' training steps.

    The site draws what `evalkit run` wrote (OUT/<model>/curves/<metric>.json) rather than
    recomputing it; a metric without such a file is drawn from the entries (views.curves).
    """
    steps = [StepDir(e.step_dir) for e in entries if e.step is not None]
    folders = dict.fromkeys(step.model_dir.path for step in steps)
    found: dict[str, list[Series]] = {}
    for name in sorted({m for e in entries for m in e.metrics}):
        curves = [c for c in (read_curve(folder, name) for folder in folders) if c is not None]
        if curves:
            found[name] = [s for c in curves for s in c.series]
    return found


def _entry_for(entries: list[Entry], row: dict[str, Any], board: dict[str, Any]) -> Entry:
    """The entry behind a board's row: its key (model, step, weights, the board's protocol)."""
    key = (row["model"], row["step_label"], row["checkpoint_fingerprint"], board["key"]["protocol_fingerprint"])
    return next(e for e in entries if e.key == key)


def _spread(entries: list[Entry], count: int) -> list[Entry]:
    """At most `count` entries, evenly spaced, always keeping the first and the last."""
    if len(entries) <= count:
        return list(entries)
    picks = sorted({round(i * (len(entries) - 1) / (count - 1)) for i in range(count)})
    return [entries[i] for i in picks]
