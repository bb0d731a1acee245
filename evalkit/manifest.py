"""The append-only record of which images exist and what their bytes hash to.

One JSON object per line, appended and fsynced after the image's rename, so a row never
refers to a file that is not complete. A process killed mid-append leaves at most a torn
last line, which readers skip. Sharded writers each append to their own file; readers take
the union of `manifest*.jsonl`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class ManifestRow:
    prompt_set: str
    prompt_id: str
    prompt_sha256: str  # the text the image was made from; a changed prompt is regenerated
    k: int
    seed: int
    file: str  # relative to the step folder
    sha256: str
    seconds: float  # this sample's share of its batch's wall time
    batch_size: int


def manifest_name(shard_index: int, shard_count: int) -> str:
    if shard_count == 1:
        return "manifest.jsonl"
    return f"manifest.shard-{shard_index}-of-{shard_count}.jsonl"


def read_manifests(folder: Path) -> dict[str, ManifestRow]:
    """Latest row per file across every manifest in `folder`."""
    rows: dict[str, ManifestRow] = {}
    for path in sorted(folder.glob("manifest*.jsonl")):
        for row in _read_rows(path):
            rows[row.file] = row
    return rows


def _read_rows(path: Path) -> Iterator[ManifestRow]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                return  # torn final line from a killed writer
            try:
                yield ManifestRow(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue  # a row we cannot trust is a row we do not have


class ManifestWriter:
    """Appends rows durably; used as a context manager by one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def __enter__(self) -> ManifestWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
        self._file = open(self.path, "a", encoding="utf-8")
        if torn:
            self._file.write("\n")  # seal a torn row so our first row starts on its own line
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def append(self, rows: Iterable[ManifestRow]) -> None:
        assert self._file is not None, "ManifestWriter used outside its context"
        text = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in rows)
        if not text:
            return
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
