"""Named prompt subsets (`--subset smoke`): fixed, shipped id lists drawn once from the built-in sets.

A subset is a JSON file in `prompts/subsets/<name>.json` (written by prompts/build_subsets.py)
that lists, per prompt set, the chosen prompt ids, how they were drawn, the fingerprint of the
set they were drawn from and the fingerprint the selection must have. Applying it keeps each
set's name (so metric cards still find their images) while `PromptSet.select` gives the result
its own fingerprint: results on a subset are never merged with, or compared against, results on
the full set. The file carries a sha256 of its own content, so an edited id list is refused
rather than silently producing a different "smoke" run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError, did_you_mean
from evalkit.fileio.hashing import sha256_json
from evalkit.fileio.jsonfile import read_json_document
from evalkit.prompts.sets import PromptSet
from evalkit.runtime.datafiles import shipped_dir

SUBSET_SCHEMA = "evalkit.subset/1"
SUBSETS_DIR = "subsets"
REBUILD_HINT = "reinstall evalkit, or in a source checkout run: python prompts/build_subsets.py"


def subsets_dir() -> Path:
    return shipped_dir("prompts") / SUBSETS_DIR


def subset_names() -> list[str]:
    folder = subsets_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def content_sha256(payload: dict[str, Any]) -> str:
    """sha256 of the subset's canonical JSON without its own `sha256` field."""
    return sha256_json({k: v for k, v in payload.items() if k != "sha256"})


def load_subset(name: str) -> dict[str, Any]:
    """The shipped subset `name`, checked against its schema and its own sha256."""
    names = subset_names()
    if name not in names:
        suggestion = did_you_mean(name, names)
        raise EvalkitError(f"unknown prompt subset {name!r}" + (f"; {suggestion}" if suggestion else ""),
                           "available subsets: " + (", ".join(names) or "none shipped"))
    path = subsets_dir() / f"{name}.json"
    payload = read_json_document(path, "schema", SUBSET_SCHEMA, REBUILD_HINT)
    if not isinstance(payload.get("sets"), dict):
        raise EvalkitError(f"{path} is not an {SUBSET_SCHEMA} file: sets is not an object", REBUILD_HINT)
    if payload.get("sha256") != content_sha256(payload):
        raise EvalkitError(f"prompt subset {name!r} was edited: {path} does not match its sha256", REBUILD_HINT)
    return payload


def apply_subset(sets: Sequence[PromptSet], name: str) -> list[PromptSet]:
    """Each set restricted to the subset's ids; a set the subset does not cover is an error.

    Running a set in full under `--subset smoke` would silently turn a minutes-long smoke run
    into hours, so uncovered sets are refused instead.
    """
    payload = load_subset(name)
    covered: dict[str, Any] = payload["sets"]
    out = []
    for pset in sets:
        spec = covered.get(pset.name)
        if spec is None:
            raise EvalkitError(f"prompt subset {name!r} does not cover prompt set {pset.name!r}",
                               f"it covers {', '.join(sorted(covered))}; drop --subset or choose those sets")
        if spec.get("parent_fingerprint") != pset.fingerprint:
            raise EvalkitError(f"prompt subset {name!r} was drawn from another version of {pset.name!r} "
                               f"(fingerprint {str(spec.get('parent_fingerprint'))[:12]}…, "
                               f"this one {pset.fingerprint[:12]}…)", REBUILD_HINT)
        chosen = pset.select(spec["ids"], f"{name} subset ({len(spec['ids'])} prompts)")
        if chosen.fingerprint != spec.get("fingerprint"):
            raise EvalkitError(f"prompt subset {name!r} of {pset.name!r} does not give its recorded fingerprint",
                               REBUILD_HINT)
        out.append(chosen)
    return out
