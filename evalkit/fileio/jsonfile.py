"""Reading the JSON files stages hand each other: one object per file, or one line naming the file.

Every reader of a stage file (generation.json, run.json, units, curves, subsets, configs) needs
the same three refusals (unreadable or not UTF-8, not JSON, not an object) and most also check
the format the file names for itself; doing that here keeps their wording and their coverage of
failure modes the same everywhere. Callers add their own hint: how to re-make that file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError


def read_json_object(path: Path, hint: str) -> dict[str, Any]:
    """The JSON object in `path` (the JSON boundary: callers type it)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvalkitError(f"{path} is unreadable (not readable JSON: {e})", hint) from e
    if not isinstance(value, dict):
        raise EvalkitError(f"{path} is not a JSON object", hint)
    return value


def read_json_document(path: Path, field: str, schema: str, hint: str) -> dict[str, Any]:
    """A JSON object that names its format in `field`, which must be `schema` (a file from another
    tool or another evalkit version is refused by name, before any of its fields is trusted)."""
    value = read_json_object(path, hint)
    if value.get(field) != schema:
        raise EvalkitError(f"{path} is not an {schema} file: {field} is {value.get(field)!r}", hint)
    return value
