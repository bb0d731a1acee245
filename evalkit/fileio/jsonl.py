"""Append-only JSON-lines files that survive being killed mid-write.

Every append is one write of whole lines followed by fsync, so a reader sees complete rows
or, after a kill, at most one torn final line, which it skips. The next append seals a torn
line with a newline first, so new rows always start on a line of their own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any


def read_rows(path: Path, mentioning: Collection[str] = ()) -> Iterator[dict[str, Any]]:
    """Complete, parseable JSON objects in `path`, in order; nothing if it does not exist.

    A line that is not UTF-8 or not a JSON object is a row we cannot trust, so a row we do not
    have. `mentioning` skips, before parsing, every line that contains none of these strings
    (record files can be large: FID stores features per image).
    """
    if not path.is_file():
        return
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return  # torn final line from a killed writer
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if mentioning and not any(text in line for text in mentioning):
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a sealed torn line
            if isinstance(row, dict):
                yield row


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = path.is_file() and path.stat().st_size > 0 and not _ends_with_newline(path)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(("\n" if torn else "") + text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # a full disk may leave a torn last line, which readers skip and the next append seals
        e.filename = e.filename or str(path)
        raise


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
