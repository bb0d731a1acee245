"""run.json on disk: the one reader (parse, check against the shipped JSON Schema, type) and the one writer.

Curves, the leaderboard, the site, `check`, the evaluator's skip check and the CLI all read
run.json through `read_run`, so a file is either a valid `RunResult` or one clear line naming
the file and the field that is wrong (docs/results.md); nothing downstream indexes raw JSON.
`write_run` is the only place that turns the model into bytes: strict JSON (NaN and infinities
as null, which browsers and other tools parse), sorted keys, replaced atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
from jsonschema.exceptions import ValidationError, best_match

from evalkit.errors import EvalkitError
from evalkit.fileio.pngio import write_atomic
from evalkit.fileio.strictjson import finite
from evalkit.results.model import RUN_SCHEMA, RunResult
from evalkit.stepdir import StepDir

RESCORE = "re-run `evalkit score` on that step folder"
MESSAGE_CHARS = 200  # a schema message quotes the offending value: keep the error one readable line
JSON_TYPES = {"number": "a number", "integer": "an integer", "string": "a string", "boolean": "true/false",
              "object": "an object", "array": "a list", "null": "null"}


def schema_path() -> Path:
    """The JSON Schema of run.json, shipped inside the package."""
    return Path(__file__).parent / "schemas" / "run.schema.json"


def read_run(path: Path) -> RunResult:
    """A run.json (or the step folder holding one), validated against the schema this evalkit writes."""
    file = StepDir(path).run_json if path.is_dir() else path
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise EvalkitError(f"{file} does not exist (the run is incomplete or was never scored)",
                           "run `evalkit run` or `evalkit score` on it first") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvalkitError(f"{file} is unreadable (not readable JSON: {e})", RESCORE) from e
    if not isinstance(document, dict):
        raise EvalkitError(f"{file} is not an evalkit {RUN_SCHEMA} result: not a JSON object", RESCORE)
    if document.get("schema_version") != RUN_SCHEMA:
        raise EvalkitError(f"{file} is not an evalkit {RUN_SCHEMA} result: schema_version is "
                           f"{document.get('schema_version')!r}", "re-score it with this evalkit version")
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    error = best_match(jsonschema.Draft202012Validator(schema).iter_errors(document))
    if error is not None:
        raise EvalkitError(f"{file} is garbled: {_problem(error)}", RESCORE)
    return RunResult.from_json(document)


def write_run(path: Path, run: RunResult) -> Path:
    """Serialise `run` to `path` (replaced atomically: readers never see half a file)."""
    text = json.dumps(finite(run.to_json()), indent=2, sort_keys=True, allow_nan=False, default=_json_default)
    write_atomic(path, (text + "\n").encode("utf-8"))
    return path


def _problem(error: ValidationError) -> str:
    """One schema violation as `field is ...`, the field written as a dotted path."""
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


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
