"""The leaderboard's canonical store: one aggregate entry per evaluated checkpoint, merged safely.

`leaderboard/entries.json` holds, for every (model, step label, checkpoint fingerprint,
protocol fingerprint), the aggregates of its run.json (value, ci95, n, by_category) plus the
absolute path of that run.json, so `evalkit check` and the site can reach the per-image
records without the store carrying them. Every derived output (leaderboard.json, the CSVs,
the site's tables) is computed from this file alone.

Merging must survive two `evalkit leaderboard` processes at once (two training jobs finishing
together): the whole read-merge-write runs under an exclusive `flock` on `leaderboard/.lock`,
and every file is replaced atomically (temporary sibling, fsync, rename), so readers never see
a half-written file and neither merge loses the other's entries. Output is canonical JSON
(sorted keys, sorted entries), so merging the same runs again rewrites nothing.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.fileio.jsonfile import read_json_document
from evalkit.fileio.pngio import write_atomic
from evalkit.fileio.strictjson import finite
from evalkit.results.comparability import ComparabilityKey
from evalkit.results.model import RunResult
from evalkit.stepdir import step_label, walk_run_files

ENTRIES_FILE = "entries.json"
ENTRIES_SCHEMA = "evalkit.leaderboard-entries/1"
LOCK_FILE = ".lock"

# Per-metric fields kept in the store: aggregates only (the metric's full `values` and the
# per-image records stay in the run folder, reachable through `run` + `records`).
METRIC_FIELDS = ("value", "ci95", "n", "higher_is_better", "display_name", "version", "prompt_set",
                 "prompt_set_fingerprint", "fingerprint", "by_category", "records", "bootstrap")

Entry = dict[str, Any]
EntryKey = tuple[str, str, str, str]


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


def entry_from_run(run: RunResult, path: Path) -> Entry:
    """The store's aggregate-only view of one run.json (see METRIC_FIELDS)."""
    checkpoint, protocol = run.checkpoint, run.protocol
    step = checkpoint.step
    step = step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None
    label = checkpoint.step_label or step_label(step)
    metrics = {name: finite({k: v for k, v in m.to_json().items() if k in METRIC_FIELDS})
               for name, m in run.metrics.items()}
    entry: Entry = {
        "model": checkpoint.name,
        "step": step,
        "step_label": label,
        "checkpoint_fingerprint": checkpoint.fingerprint,
        "pipeline_class": checkpoint.pipeline_class,
        "protocol": protocol.to_json(),
        "prompt_sets": {name: s.to_json() for name, s in run.prompt_sets.items()},
        "metrics": metrics,
        "run": str(Path(path).resolve()),
        "finished": run.provenance.finished,
    }
    efficiency = efficiency_summary(run.efficiency, list(protocol.resolution))
    if efficiency:
        entry["efficiency"] = efficiency
    return entry


def entry_metric_key(entry: Entry, name: str) -> ComparabilityKey:
    """The comparability key of the entry's metric `name` (which it must hold)."""
    metric = entry["metrics"][name]
    return ComparabilityKey(entry["protocol"]["fingerprint"], metric["fingerprint"], metric["prompt_set_fingerprint"])


def efficiency_summary(profile: Any, resolution: Any = None) -> dict[str, Any]:
    """Parameters, MACs per image and latency out of a profile.json record (docs/profile.md).

    MACs are taken at the protocol's resolution when the profile has it, else at the first
    resolution profiled. Missing parts are left out rather than guessed.
    """
    if not isinstance(profile, dict):
        return {}
    out: dict[str, Any] = {}
    parameters = profile.get("parameters") or {}
    if isinstance(parameters.get("total"), int):
        out["parameters"] = parameters["total"]
    compute = [c for c in profile.get("compute") or [] if isinstance(c, dict)]
    side = resolution[0] if isinstance(resolution, list) and resolution else resolution
    chosen = next((c for c in compute if c.get("resolution") == side), compute[0] if compute else None)
    if chosen is not None:
        per_image = (chosen.get("per_image") or {}).get("total")
        denoiser = (chosen.get("denoiser") or {}).get("total")
        if isinstance(per_image, (int, float)):
            out["gmacs_per_image"] = per_image / 1e9
        if isinstance(denoiser, (int, float)):
            out["denoiser_gmacs"] = denoiser / 1e9
        out["resolution"] = chosen.get("resolution")
    latency = profile.get("latency")
    if isinstance(latency, dict):
        points = [p for p in latency.get("points") or [] if isinstance(p, dict)]
        seconds = latency.get("batch1_seconds_per_image")
        if seconds is None and points:
            seconds = points[0].get("seconds_per_image")
        if isinstance(seconds, (int, float)):
            out["seconds_per_image"] = seconds
        if isinstance(latency.get("best_images_per_second"), (int, float)):
            out["images_per_second"] = latency["best_images_per_second"]
        peaks = [peak for p in points if isinstance(peak := p.get("peak_memory_bytes"), int)]
        if peaks:
            out["peak_memory_bytes"] = max(peaks)
        if isinstance(latency.get("device"), dict) and latency["device"].get("name"):
            out["device"] = latency["device"]["name"]
    return finite(out)


def entry_key(entry: Entry) -> EntryKey:
    """What identifies an entry: a model's step, its weights, and the protocol they were run under.

    The protocol is part of the key so one checkpoint evaluated under two protocols (two
    output folders) keeps both results; they land on separate boards.
    """
    return (entry["model"], entry["step_label"], entry["checkpoint_fingerprint"], entry["protocol"]["fingerprint"])


def merge_entries(existing: Iterable[Entry], incoming: Iterable[Entry]) -> tuple[list[Entry], dict[str, int]]:
    """Union by key, in canonical order, with counts of what changed.

    An incoming entry read from the same run.json replaces the stored one (the file is the
    truth now: more metrics, a re-scored metric). Two different run.json files for the same
    key keep the one that finished later (ties: the larger path), so the result does not
    depend on the order merges happen in.
    """
    merged = {entry_key(e): e for e in existing}
    counts = {"added": 0, "updated": 0, "unchanged": 0, "kept": 0}
    for entry in incoming:
        key = entry_key(entry)
        old = merged.get(key)
        if old is None:
            merged[key] = entry
            counts["added"] += 1
        elif old == entry:
            counts["unchanged"] += 1
        elif old["run"] == entry["run"] or _recency(entry) > _recency(old):
            merged[key] = entry
            counts["updated"] += 1
        else:
            counts["kept"] += 1
    return [merged[k] for k in sorted(merged)], counts


def _recency(entry: Entry) -> tuple[str, str]:
    return (entry.get("finished") or "", entry["run"])


# -- the store on disk -----------------------------------------------------------------------------


def load_entries(folder: Path) -> list[Entry]:
    """The stored entries; none when the store does not exist yet."""
    path = Path(folder) / ENTRIES_FILE
    if not path.is_file():
        return []
    document = read_json_document(path, "schema_version", ENTRIES_SCHEMA,
                                  "restore it from version control, or delete it and merge the runs again")
    entries = document.get("entries", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise EvalkitError(f"{path} is garbled: entries is not a list of objects",
                           "restore it from version control, or delete it and merge the runs again")
    return list(entries)


def entries_text(entries: list[Entry]) -> str:
    document = {"schema_version": ENTRIES_SCHEMA, "entries": sorted(entries, key=entry_key)}
    return dumps(document)


def dumps(document: Any) -> str:
    """Canonical JSON text: the same content always gives the same bytes."""
    return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the store's exclusive lock (blocking) for a read-merge-write."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_FILE, "a")  # noqa: SIM115 - held across the yield
    except OSError as e:
        raise EvalkitError(f"cannot write to {folder} ({e.strerror})", "pass a writable folder with --into") from e
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


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
