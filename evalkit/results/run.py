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

import numpy as np

from evalkit.errors import EvalkitError
from evalkit.fileio.jsonfile import read_json_document
from evalkit.fileio.pngio import write_atomic
from evalkit.fileio.schemacheck import schema_problem
from evalkit.fileio.strictjson import finite
from evalkit.results.model import RUN_SCHEMA, RunResult
from evalkit.stepdir import StepDir

RESCORE = "re-run `evalkit score` on that step folder"


def schema_path() -> Path:
    """The JSON Schema of run.json, shipped inside the package."""
    return Path(__file__).parent / "schemas" / "run.schema.json"


def read_run(path: Path) -> RunResult:
    """A run.json (or the step folder holding one), validated against the schema this evalkit writes."""
    file = StepDir(path).run_json if path.is_dir() else path
    if not file.exists():
        raise EvalkitError(f"{file} does not exist (the run is incomplete or was never scored)",
                           "run `evalkit run` or `evalkit score` on it first")
    document = read_json_document(file, "schema_version", RUN_SCHEMA, RESCORE)
    problem = schema_problem(document, schema_path())
    if problem is not None:
        raise EvalkitError(f"{file} is garbled: {problem}", RESCORE)
    return RunResult.from_json(document)


def write_run(path: Path, run: RunResult) -> Path:
    """Serialise `run` to `path` (replaced atomically: readers never see half a file)."""
    text = json.dumps(finite(run.to_json()), indent=2, sort_keys=True, allow_nan=False, default=_json_default)
    write_atomic(path, (text + "\n").encode("utf-8"))
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
