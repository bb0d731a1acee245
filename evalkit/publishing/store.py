"""The leaderboard's canonical store: one aggregate entry per evaluated checkpoint, merged safely.

`leaderboard/entries.json` holds, for every (model, step label, checkpoint fingerprint,
protocol fingerprint), the aggregates of its run.json (value, ci95, n, by_category) plus the
path of that run.json relative to the leaderboard folder (a published leaderboard names no
local path, and moving it together with the runs keeps it working), so `evalkit check` and the
site can reach the per-image records without the store carrying them. Every derived output
(leaderboard.json, the CSVs, the site's tables) is computed from this file alone.

Merging must survive two `evalkit leaderboard` processes at once (two training jobs finishing
together): the whole read-merge-write runs under an exclusive `flock` on `leaderboard/.lock`,
and every file is replaced atomically (temporary sibling, fsync, rename), so readers never see
a half-written file and neither merge loses the other's entries. Output is canonical JSON
(sorted keys, sorted entries), so merging the same runs again rewrites nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.fileio.jsonfile import read_json_document
from evalkit.fileio.lockfile import exclusive
from evalkit.fileio.pngio import remove_orphaned_temporaries, write_atomic
from evalkit.fileio.schemacheck import schema_problem
from evalkit.publishing.entry import Entry, schema_path
from evalkit.results.run import schema_path as run_schema_path
from evalkit.stepdir import walk_run_files

ENTRIES_FILE = "entries.json"
ENTRIES_SCHEMA = "evalkit.leaderboard-entries/1"
LOCK_FILE = ".lock"
REBUILD = "restore it from version control, or delete it and merge the runs again"

# -- finding run.json files ------------------------------------------------------------------------


def find_run_files(paths: Iterable[Path]) -> list[Path]:
    """Absolute paths of every run.json named by `paths`: files directly, folders searched.

    A folder holding run.json is a complete step folder; its subfolders (images, scores) are
    not searched, which keeps the walk cheap on output folders with many images.
    """
    found: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            found.add(path.resolve())
        elif path.is_dir():
            found.update(walk_run_files(path))
        else:
            raise EvalkitError(f"{path} does not exist", "give an output folder, a step folder or a run.json file")
    return sorted(found)


# -- entries ---------------------------------------------------------------------------------------


def merge_entries(existing: Iterable[Entry], incoming: Iterable[Entry]) -> tuple[list[Entry], dict[str, int]]:
    """Union by key, in canonical order, with counts of what changed.

    An incoming entry read from the same run.json replaces the stored one (the file is the
    truth now: more metrics, a re-scored metric). Two different run.json files for the same
    key keep the one that finished later (ties: the larger path), so the result does not
    depend on the order merges happen in.
    """
    merged = {e.key: e for e in existing}
    counts = {"added": 0, "updated": 0, "unchanged": 0, "kept": 0}
    for entry in incoming:
        key = entry.key
        old = merged.get(key)
        if old is None:
            merged[key] = entry
            counts["added"] += 1
        elif old == entry:
            counts["unchanged"] += 1
        elif old.run == entry.run or entry.recency > old.recency:
            merged[key] = entry
            counts["updated"] += 1
        else:
            counts["kept"] += 1
    return [merged[k] for k in sorted(merged)], counts


# -- the store on disk -----------------------------------------------------------------------------


def load_entries(folder: Path) -> list[Entry]:
    """The stored entries; none when the store does not exist yet."""
    path = Path(folder) / ENTRIES_FILE
    if not path.is_file():
        return []
    document = read_json_document(path, "schema_version", ENTRIES_SCHEMA, REBUILD)
    problem = schema_problem(document, schema_path(), [run_schema_path()])
    if problem is not None:
        raise EvalkitError(f"{path} is garbled: {problem}", REBUILD)
    return [Entry.from_json(e, Path(folder)) for e in document["entries"]]


def entries_text(entries: list[Entry], folder: Path) -> str:
    """entries.json of the leaderboard `folder` (run paths relative to it)."""
    ordered = sorted(entries, key=lambda e: e.key)
    document = {"schema_version": ENTRIES_SCHEMA, "entries": [e.to_json(folder) for e in ordered]}
    return dumps(document)


def dumps(document: Any) -> str:
    """Canonical JSON text: the same content always gives the same bytes."""
    return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the store's exclusive lock (waiting for it) for a read-merge-write.

    Every writer of the folder holds this lock, so temporaries found under it belong to a writer
    that was killed or ran out of space: they are removed before anything is written.
    """
    folder = Path(folder)
    with exclusive(folder / LOCK_FILE, wait=True, what=f"the leaderboard {folder}", hint="",
                   unwritable="pass a writable folder with --into"):
        remove_orphaned_temporaries([folder, *(d for d in folder.iterdir() if d.is_dir())])
        yield


def write_text_atomic(path: Path, text: str) -> bool:
    """Replace `path` with `text` all at once; returns False (and writes nothing) when unchanged."""
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    write_atomic(path, data)
    return True
