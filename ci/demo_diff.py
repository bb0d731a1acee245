"""Compare two `evalkit demo` output folders, apart from timings, clocks and the git commit.

A refactor must leave every file the demo writes byte-identical; the only bytes allowed to
differ are the ones that record when and how fast something ran (and the commit that ran it).
Usage: python ci/demo_diff.py OLD_OUT NEW_OUT — prints each difference, exits 1 if any.
Both folders must have been written at the same path (run one, move it, run the other), so
that recorded paths agree; PNGs, CSVs, SVGs and every other file are compared as bytes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# keys whose values are clocks or durations wherever they appear
VOLATILE = {"started", "finished", "seconds", "images_per_second", "git_commit"}


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<volatile>" if k in VOLATILE else _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _normal(path: Path) -> bytes | Any:
    data = path.read_bytes()
    if path.suffix == ".json":
        return _scrub(json.loads(data))
    if path.suffix == ".jsonl":
        return [_scrub(json.loads(line)) for line in data.splitlines() if line.strip()]
    return data


def differences(old: Path, new: Path) -> list[str]:
    files = {p.relative_to(old) for p in old.rglob("*") if p.is_file()}
    files |= {p.relative_to(new) for p in new.rglob("*") if p.is_file()}
    out = []
    for rel in sorted(files):
        a, b = old / rel, new / rel
        if not (a.is_file() and b.is_file()):
            out.append(f"only in {'old' if a.is_file() else 'new'}: {rel}")
        elif _normal(a) != _normal(b):
            out.append(f"differs: {rel}")
    return out


if __name__ == "__main__":
    found = differences(Path(sys.argv[1]), Path(sys.argv[2]))
    print("\n".join(found) or "no differences apart from timings and the git commit")
    sys.exit(1 if found else 0)
