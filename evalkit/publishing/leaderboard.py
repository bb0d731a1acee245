"""Boards: stored entries grouped by what makes their numbers comparable, one row per model.

Two numbers may sit in one column only when their comparability keys (protocol, metric and
prompt-set fingerprints; evalkit.results.comparability) agree. A board is one protocol plus one
key of that protocol per metric (a metric's *variant*); entries that disagree land on another
board and are never averaged or ranked together. Within a protocol, each metric's variants are
ranked by how many models carry them: board 1 holds every metric's most common variant, board
2 the second most common, and so on; this does not depend on the order runs were merged in.

Each board has one row per model, taken from a single step (`latest`: the highest step, `final`
above any number; `best`: the step with the best value of the board's primary metric, which
is `--by`, else the metric whose card declares `headline: true` (TIFA), else the first
by name). All of a row's numbers come from that one step.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.fileio.csvtext import csv_text
from evalkit.fileio.hashing import sha256_json
from evalkit.fileio.jsonfile import read_json_object
from evalkit.publishing.entry import Entry, EntryMetric
from evalkit.publishing.store import (
    ENTRIES_FILE,
    dumps,
    entries_text,
    find_run_files,
    load_entries,
    locked,
    merge_entries,
    write_text_atomic,
)
from evalkit.results.comparability import ComparabilityKey
from evalkit.results.model import AnyProtocol, as_float
from evalkit.results.run import read_run

LEADERBOARD_SCHEMA = "evalkit.leaderboard/1"
LEADERBOARD_FILE = "leaderboard.json"
BOARDS_DIR = "boards"
SELECTIONS = ("latest", "best")
EFFICIENCY_COLUMNS = ("parameters", "gmacs_per_image", "seconds_per_image", "images_per_second")

Cells = dict[str, EntryMetric]  # one entry's metrics that sit on a board


@dataclass
class MergeResult:
    folder: Path
    runs: int
    counts: dict[str, int]
    document: dict[str, Any]
    written: list[Path] = field(default_factory=list)


def merge_runs(paths: Sequence[Path], into: Path, select: str = "latest", by: str = "") -> MergeResult:
    """Merge every run.json under `paths` into the store in `into` and rewrite the derived files.

    Reading the runs happens before taking the lock (it can be slow on network file systems);
    the read-merge-write of the store and its outputs happens under it.
    """
    check_selection(select)
    incoming = [Entry.from_run(read_run(p), p) for p in find_run_files(paths)]
    if paths and not incoming:
        raise EvalkitError(f"no run.json under {', '.join(str(p) for p in paths)}",
                           "a step folder is complete once `evalkit score` has written its run.json")
    into = Path(into)
    with locked(into):
        entries, counts = merge_entries(load_entries(into), incoming)
        if not entries:
            raise EvalkitError(f"{into} holds no results yet", "give run folders or run.json files to merge")
        document = leaderboard_document(entries, into, select, by)
        written = write_outputs(into, entries, document)
    return MergeResult(into, len(incoming), counts, document, written)


def check_selection(select: str) -> None:
    if select not in SELECTIONS:
        raise EvalkitError(f"unknown selection {select!r}", f"use one of: {', '.join(SELECTIONS)}")


def write_outputs(folder: Path, entries: list[Entry], document: dict[str, Any]) -> list[Path]:
    """entries.json, leaderboard.json and one CSV per board; stale board CSVs are removed."""
    folder = Path(folder)
    files = {folder / ENTRIES_FILE: entries_text(entries, folder), folder / LEADERBOARD_FILE: dumps(document)}
    for board in document["boards"]:
        files[folder / board["csv"]] = board_csv(board)
    written = [path for path, text in files.items() if write_text_atomic(path, text)]
    boards_dir = folder / BOARDS_DIR
    if boards_dir.is_dir():
        for stale in sorted(set(boards_dir.glob("*.csv")) - set(files)):
            stale.unlink()
    return written


# -- boards ----------------------------------------------------------------------------------------


def leaderboard_document(entries: Iterable[Entry], folder: Path, select: str = "latest",
                         by: str = "") -> dict[str, Any]:
    """leaderboard.json: the boards, their comparability keys and one row per model; rows name their
    run.json relative to `folder` (where the document is published)."""
    check_selection(select)
    boards = build_boards(entries, folder, select, by)
    return {"schema_version": LEADERBOARD_SCHEMA, "select": select, "by": by or None, "boards": boards}


def build_boards(entries: Iterable[Entry], folder: Path, select: str = "latest", by: str = "") -> list[dict[str, Any]]:
    by_protocol: dict[str, list[Entry]] = defaultdict(list)
    for entry in sorted(entries, key=lambda e: e.key):
        by_protocol[entry.protocol.fingerprint].append(entry)
    boards = []
    for protocol_fp in sorted(by_protocol):
        group = by_protocol[protocol_fp]
        ranked = _ranked_variants(group)
        depth = max((len(v) for v in ranked.values()), default=0)
        for level in range(depth):
            variants = {m: v[level] for m, v in sorted(ranked.items()) if len(v) > level}
            boards.append(_board(protocol_fp, variants, group, select, by, level, folder))
    if by and not any(by in b["key"]["metrics"] for b in boards):
        metrics = sorted({m for b in boards for m in b["key"]["metrics"]})
        raise EvalkitError(f"no board has the metric {by!r}", f"use --by with one of: {', '.join(metrics)}")
    _title_variants(boards)
    boards.sort(key=lambda b: (-len(b["rows"]), b["title"], b["id"]))
    return boards


def _ranked_variants(group: list[Entry]) -> dict[str, list[ComparabilityKey]]:
    """Per metric, its comparability keys within one protocol (its variants), most models first."""
    models: dict[tuple[str, ComparabilityKey], set[str]] = defaultdict(set)
    uses: Counter[tuple[str, ComparabilityKey]] = Counter()
    for entry in group:
        for name in entry.metrics:
            variant = (name, entry.metric_key(name))
            models[variant].add(entry.model)
            uses[variant] += 1
    ranked: dict[str, list[ComparabilityKey]] = defaultdict(list)
    for name, key in sorted(models, key=lambda k: (k[0], -len(models[k]), -uses[k], k[1])):
        ranked[name].append(key)
    return ranked


def _board(protocol_fp: str, variants: dict[str, ComparabilityKey], group: list[Entry], select: str, by: str,
           level: int, folder: Path) -> dict[str, Any]:
    key = {"protocol_fingerprint": protocol_fp,
           "metrics": {m: {"fingerprint": k.metric_fingerprint, "prompt_set_fingerprint": k.prompt_set_fingerprint}
                       for m, k in variants.items()}}
    board_id = "b-" + sha256_json(key)[:12]
    cells = [(e, _cells(e, variants)) for e in group]
    cells = [(e, c) for e, c in cells if c]
    metrics = [_metric_info(name, variants[name], cells) for name in variants]
    primary = by if by in variants else headline(metrics)
    primary_info = next(m for m in metrics if m["name"] == primary)
    if select == "best" and primary_info["higher_is_better"] is None:
        raise EvalkitError(f"metric {primary!r} does not say whether higher is better, so there is no best step",
                           "use --select latest, or --by a metric with higher_is_better")
    per_model: dict[str, list[tuple[Entry, Cells]]] = defaultdict(list)
    for entry, entry_cells in cells:
        per_model[entry.model].append((entry, entry_cells))
    rows = [_row(*_choose(candidates, select, primary, primary_info["higher_is_better"]), folder)
            for _, candidates in sorted(per_model.items())]
    _rank(rows, primary, primary_info["higher_is_better"])
    # A board's protocol is evalkit's when any of its entries ran it (external images can only
    # join one by the user's --same-protocol-as declaration).
    protocol = min((e.protocol for e, _ in cells), key=lambda p: p.external, default=None)
    return {"id": board_id, "title": _title(protocol, metrics), "level": level + 1, "key": key,
            "protocol": protocol.to_json() if protocol else {},
            "protocol_text": protocol.describe() if protocol else "", "metrics": metrics, "primary": primary,
            "select": select,
            "csv": f"{BOARDS_DIR}/{board_id}.csv", "rows": rows}


def headline(metrics: list[dict[str, Any]]) -> str:
    """The metric a board ranks by without --by: the first (by name) whose card declares it the
    headline (TIFA's shipped cards do), else the first by name."""
    return next((m["name"] for m in metrics if m["headline"]), metrics[0]["name"])


def _cells(entry: Entry, variants: dict[str, ComparabilityKey]) -> Cells:
    """The entry's metric entries that belong on this board: those with the board's key."""
    return {name: metric for name, metric in entry.metrics.items() if variants.get(name) == entry.metric_key(name)}


def _metric_info(name: str, key: ComparabilityKey, cells: list[tuple[Entry, Cells]]) -> dict[str, Any]:
    entry, metric = next((e, c[name]) for e, c in cells if name in c)
    scored = entry.prompt_sets.get(metric.prompt_set)
    part_of = scored.part_of if scored is not None else None
    return {"name": name, "display_name": metric.display_name or name,
            "higher_is_better": metric.higher_is_better,
            "headline": any(c[name].headline for _, c in cells if name in c),
            "prompt_set": metric.prompt_set,
            "version": metric.version, "fingerprint": key.metric_fingerprint,
            "prompt_set_fingerprint": key.prompt_set_fingerprint,
            # a subset's fingerprint is its own; this names the whole set `prompts list` shows
            "prompt_subset": part_of.describe(metric.prompt_set) if part_of is not None else ""}


def _choose(candidates: list[tuple[Entry, Cells]], select: str, primary: str,
            higher_is_better: bool | None) -> tuple[Entry, Cells]:
    latest = max(candidates, key=lambda c: (c[0].step_order, c[0].recency))
    if select == "latest":
        return latest
    scored = [(value, c) for c in candidates if (value := _cell_value(c[1], primary)) is not None]
    if not scored:
        return latest
    sign = 1 if higher_is_better else -1
    return max(scored, key=lambda s: (sign * s[0], s[1][0].step_order, s[1][0].run))[1]


def _cell_value(cells: Cells, name: str) -> float | None:
    metric = cells.get(name)
    return None if metric is None else as_float(metric.value)


def _value(cells: dict[str, Any], name: str) -> float | None:
    value = (cells.get(name) or {}).get("value")
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _row(entry: Entry, cells: Cells, folder: Path) -> dict[str, Any]:
    row: dict[str, Any] = {
        "rank": None, "model": entry.model, "step": entry.step, "step_label": entry.step_label,
        "checkpoint_fingerprint": entry.checkpoint_fingerprint, "run": entry.run_relative_to(folder),
        "metrics": {name: m.cell() for name, m in sorted(cells.items())},
    }
    if entry.protocol.external:  # the images were made elsewhere: the row says so, with the user's note
        row["external"] = entry.protocol.describe()
    if entry.efficiency:
        row["efficiency"] = entry.efficiency.to_json()
    return row


def _rank(rows: list[dict[str, Any]], primary: str, higher_is_better: bool | None) -> None:
    """Best first by the primary metric; rows without it go last, unranked."""
    sign = -1 if higher_is_better is not False else 1

    def order(row: dict[str, Any]) -> tuple[int, float, str]:
        value = _value(row["metrics"], primary)
        return (1, 0.0, row["model"]) if value is None else (0, sign * value, row["model"])

    rows.sort(key=order)
    for index, row in enumerate(rows, start=1):
        row["rank"] = index if _value(row["metrics"], primary) is not None else None


def _title(protocol: AnyProtocol | None, metrics: list[dict[str, Any]]) -> str:
    prompt_sets = sorted({str(m["prompt_set"]) for m in metrics if m.get("prompt_set")})
    return (protocol.describe() if protocol else "?") + (" on " + " + ".join(prompt_sets) if prompt_sets else "")


def _title_variants(boards: list[dict[str, Any]]) -> None:
    """Make titles unique: later metric variants name their fingerprints, and protocols that
    differ only in settings the title leaves out name their fingerprint."""
    protocols: dict[str, set[str]] = defaultdict(set)
    for board in boards:
        protocols[board["title"]].add(board["key"]["protocol_fingerprint"])
    for board in boards:
        base = board["title"]
        if len(protocols[base]) > 1:
            board["title"] += f" [protocol {board['key']['protocol_fingerprint'][:8]}]"
        if board["level"] > 1:
            versions = ", ".join(f"{m} {v['fingerprint'][:8]}" for m, v in board["key"]["metrics"].items())
            board["title"] += f" (other metric versions: {versions})"


# -- CSV -------------------------------------------------------------------------------------------


def board_csv(board: dict[str, Any]) -> str:
    """One board as CSV: value, CI bounds and n per metric, efficiency when known."""
    names = [m["name"] for m in board["metrics"]]
    header = ["rank", "model", "step", "checkpoint_fingerprint"]
    for name in names:
        header += [name, f"{name}_ci95_low", f"{name}_ci95_high", f"{name}_n"]
    efficiency = [c for c in EFFICIENCY_COLUMNS if any(c in r.get("efficiency", {}) for r in board["rows"])]
    header += [*efficiency, "run"]
    lines = []
    for row in board["rows"]:
        line = [_cell(row["rank"]), row["model"], row["step_label"], row["checkpoint_fingerprint"]]
        for name in names:
            metric = row["metrics"].get(name) or {}
            ci95 = metric.get("ci95")
            ci = ci95 if isinstance(ci95, list) else [None, None]
            line += [_cell(metric.get("value")), _cell(ci[0]), _cell(ci[1]), _cell(metric.get("n"))]
        line += [_cell(row.get("efficiency", {}).get(c)) for c in efficiency]
        lines.append([*line, row["run"]])
    return csv_text(header, lines)


def _cell(value: Any) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def read_document(folder: Path) -> dict[str, Any] | None:
    """leaderboard.json of a leaderboard folder, if there is one (the site reuses its settings)."""
    path = Path(folder) / LEADERBOARD_FILE
    if not path.is_file():
        return None
    return read_json_object(path, "run `evalkit leaderboard --into` that folder again")
