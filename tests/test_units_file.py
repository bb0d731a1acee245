"""The per-prompt sidecar (units.json): one typed model, read back exactly, garbled files refused in one line."""

from __future__ import annotations

import json

import pytest

from evalkit.errors import EvalkitError
from evalkit.results.units import UNITS_SCHEMA, PromptUnits, read_units


def _doc(**changes):
    doc = {"schema": UNITS_SCHEMA, "metric": "clip", "fingerprint": "f" * 64, "prompt_ids": ["a", "b", "c"],
           "tags": [["x"], [], ["y", "z"]], "tag_kinds": ["kind"],
           "ratios": {"value": {"num": [1.0, 0.5, 2], "den": [1, 1, 2]}}}
    doc.update(changes)
    return doc


def test_units_read_back_to_the_same_document(tmp_path):
    path = tmp_path / "u.units.json"
    path.write_text(json.dumps(_doc()), encoding="utf-8")
    units = read_units(path)
    assert units.to_json() == _doc() and units.is_ratio
    num, den = units.value_ratio()
    assert num.tolist() == [1.0, 0.5, 2.0] and den.tolist() == [1.0, 1.0, 2.0]
    assert not PromptUnits.from_json(_doc(ratios={}), path).is_ratio


@pytest.mark.parametrize(("doc", "problem"), [
    (_doc(prompt_ids=["a", 2, "c"]), "prompt_ids is not a list of strings"),
    (_doc(ratios={"value": {"num": [1.0, 0.5], "den": [1, 1, 2]}}), "ratios.value does not hold"),
    (_doc(ratios={"value": {"num": [1.0, "x", 2], "den": [1, 1, 2]}}), "ratios.value does not hold"),
    (_doc(ratios={"value": {"num": [1.0, 0.5, 2]}}), "'den'"),
    ({k: v for k, v in _doc().items() if k != "metric"}, "'metric'"),
    (_doc(schema="evalkit.prompt-units/0"), "schema is 'evalkit.prompt-units/0'"),
])
def test_garbled_units_are_one_line_naming_the_file(tmp_path, doc, problem):
    path = tmp_path / "u.units.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(EvalkitError) as caught:
        read_units(path)
    assert problem in str(caught.value) and str(path) in str(caught.value) and "\n" not in str(caught.value)
