"""Per-image metric records, appended as they are computed and keyed by what made them.

One JSONL file per (metric, fingerprint) under the step folder:
    scores/<metric>/<fingerprint[:16]>.jsonl   one line per image: file, image_sha256, records
A changed card or model gives a new fingerprint and so a new file: stale scores are never
reused. A shard of a multi-process run appends to its own `<fingerprint[:16]>.shard-i-of-N.jsonl`
(no two processes append to one file); readers take the union, and `merge` folds the shards'
files into the step's own. One line per image (all of TIFA's question records in it) keeps an
image's records atomic; a torn last line from a killed run is ignored, as in the image manifest.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from evalkit.fileio.jsonl import append_rows, read_rows
from evalkit.fileio.pngio import write_atomic
from evalkit.metrics.api import ImageItem, Record
from evalkit.stepdir import StepDir


class ScoreStore:
    def __init__(self, step_dir: Path, metric: str, fingerprint: str, shard_index: int = 0,
                 shard_count: int = 1) -> None:
        folder = StepDir(step_dir)
        self.folder, self.metric, self.fingerprint = folder, metric, fingerprint
        self.files = folder.scores(metric, fingerprint)
        self.path = folder.score_records(metric, fingerprint, shard_index, shard_count)  # where this writer appends

    def scored(self) -> dict[tuple[str, str], list[Record]]:
        """(file, image sha256) → records over the step's file and every shard's; the latest line wins
        (a line of the wrong shape is not a record)."""
        return {key: row["records"] for key, row in self._rows().items()}

    def _rows(self) -> dict[tuple[str, str], dict[str, Any]]:
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for path in [self.files.records, *self.folder.score_shard_records(self.metric, self.fingerprint)]:
            for row in read_rows(path):
                if (isinstance(row.get("file"), str) and isinstance(row.get("image_sha256"), str)
                        and isinstance(row.get("records"), list)):
                    rows[(row["file"], row["image_sha256"])] = row
        return rows

    def shard_files(self) -> list[Path]:
        """The shards' record files of this metric fingerprint (not the step's own)."""
        return self.folder.score_shard_records(self.metric, self.fingerprint)

    def fold_shards(self, order: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list[Record]]:
        """Rewrite the step's own record file as the union (the images of `order` first, in that order:
        what one process scoring them would have appended), then drop the shards' files; returns the
        union, as `scored()` would. Crash-safe: until the shards' files are gone the union reads the same."""
        rows = self._rows()
        shards = self.shard_files()
        if shards:
            first = set(order)
            ordered = [rows[key] for key in order if key in rows]
            ordered += [row for key, row in rows.items() if key not in first]
            text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in ordered)
            write_atomic(self.files.records, text.encode("utf-8"))
            for path in shards:
                path.unlink(missing_ok=True)
        return {key: row["records"] for key, row in rows.items()}

    def append(self, items: Iterable[ImageItem], records: Iterable[list[Record]]) -> None:
        append_rows(self.path, [
            {"file": item.file, "image_sha256": item.sha256, "prompt_set": item.prompt_set,
             "prompt_id": item.prompt.id, "k": item.k, "records": recs}
            for item, recs in zip(items, records, strict=True)
        ])
