"""Checking a JSON document against a shipped JSON Schema, reported as one line naming the field.

The files evalkit hands between stages (generation.json, run.json) are read back by later stages,
other tools and other evalkit versions. Their readers validate at run time, so a hand-edited,
truncated-then-repaired or older file is refused with `<file> is garbled: checkpoint.step is not an
integer or null` rather than failing later with a KeyError far from its cause.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

MESSAGE_CHARS = 200  # a schema message quotes the offending value: keep the error one readable line
JSON_TYPES = {"number": "a number", "integer": "an integer", "string": "a string", "boolean": "true/false",
              "object": "an object", "array": "a list", "null": "null"}


def schema_problem(document: Any, schema_file: Path, references: Sequence[Path] = ()) -> str | None:
    """The most relevant violation of the schema as `field is ...`, or None when the document conforms.

    `references` are the shipped schemas `schema_file` refers to by their `$id` (the leaderboard
    store reuses run.json's protocol and number shapes instead of restating them).
    """
    import jsonschema  # on use: the CLI answers before importing it
    from jsonschema.exceptions import best_match
    from referencing import Registry, Resource

    resources = [Resource.from_contents(json.loads(p.read_text(encoding="utf-8"))) for p in references]
    registry: Registry[Any] = Registry().with_resources((r.id() or "", r) for r in resources)
    validator = jsonschema.Draft202012Validator(json.loads(schema_file.read_text(encoding="utf-8")), registry=registry)
    error = best_match(validator.iter_errors(document))
    return None if error is None else _problem(error)


def _problem(error: ValidationError) -> str:
    field = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in error.absolute_path).replace(".[", "[")
    if error.validator == "required":
        missing = next((k for k in error.validator_value if k not in error.instance), "?")
        return f"{field + '.' if field else ''}{missing} is missing"
    where = field or "the document"
    if error.validator == "type":
        types: list[str] = (error.validator_value if isinstance(error.validator_value, list)
                            else [error.validator_value])
        return f"{where} is not {' or '.join(JSON_TYPES.get(t, t) for t in types)}"
    return f"{where} is invalid: {error.message[:MESSAGE_CHARS]}"
