"""A report file the user asked for (--markdown, --junit, --json): written whole or not at all, with one
line naming the path when it cannot be written."""

from __future__ import annotations

from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.fileio.pngio import write_atomic


def write_report(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text.encode("utf-8"))
    except OSError as e:
        raise EvalkitError(f"cannot write {path} ({e.strerror})", "choose a writable path") from e
