"""Per-image metric records, appended as they are computed and keyed by what made them.

One JSONL file per (metric, fingerprint) under the step folder:
    scores/<metric>/<fingerprint[:16]>.jsonl   one line per image: file, image_sha256, records
A changed card or model gives a new fingerprint and so a new file: stale scores are never
reused. One line per image (all of TIFA's question records in it) keeps an image's records
atomic; a torn last line from a killed run is ignored, as in the image manifest.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from evalkit.fileio.jsonl import append_rows, read_rows
from evalkit.metrics.api import ImageItem, Record
from evalkit.stepdir import StepDir


class ScoreStore:
    def __init__(self, step_dir: Path, metric: str, fingerprint: str) -> None:
        self.files = StepDir(step_dir).scores(metric, fingerprint)
        self.path = self.files.records

    def scored(self) -> dict[tuple[str, str], list[Record]]:
        """(file, image sha256) → records; the latest line wins (a line of the wrong shape is not a record)."""
        return {(row["file"], row["image_sha256"]): row["records"] for row in read_rows(self.path)
                if isinstance(row.get("file"), str) and isinstance(row.get("image_sha256"), str)
                and isinstance(row.get("records"), list)}

    def append(self, items: Iterable[ImageItem], records: Iterable[list[Record]]) -> None:
        append_rows(self.path, [
            {"file": item.file, "image_sha256": item.sha256, "prompt_set": item.prompt_set,
             "prompt_id": item.prompt.id, "k": item.k, "records": recs}
            for item, recs in zip(items, records, strict=True)
        ])
