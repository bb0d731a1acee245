"""Record views: how the site reads a metric's per-image records, declared by the metric, carried in run.json."""

from __future__ import annotations

import dataclasses
import json
import math

import jsonschema
import pytest

from evalkit.metrics.tifa.metric import RECORD_VIEW
from evalkit.metrics.tifa.scoring import QuestionRecord
from evalkit.results.recordview import RecordField, RecordView
from evalkit.results.run import schema_path


def test_tifa_view_names_only_fields_its_records_have() -> None:
    stored = {f.name for f in dataclasses.fields(QuestionRecord)}
    assert {f.key for f in RECORD_VIEW.fields} <= stored
    assert RECORD_VIEW.score in stored and RECORD_VIEW.filter in stored
    assert {"question", "answer", "free_form_answer"} <= {f.key for f in RECORD_VIEW.fields}


def test_score_is_the_mean_of_the_score_field_with_bools_as_0_1() -> None:
    view = RecordView(score="correct")
    assert view.score_of([{"correct": True}, {"correct": False}, {"correct": True}, {"other": 1}]) == (2 / 3, 3)
    assert RecordView().score_of([{"value": 0.5}, {"value": math.nan}, {"value": "x"}, "junk"]) == (0.5, 1)
    assert RecordView().score_of([{"features": "AAAA"}]) is None  # FID: nothing per image


@pytest.mark.parametrize("view", [RecordView(), RECORD_VIEW, RecordView(fields=(RecordField("cosine", "cosine"),))])
def test_views_round_trip_and_match_the_schema(view: RecordView) -> None:
    assert RecordView.from_json(json.loads(json.dumps(view.to_json()))) == view
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    jsonschema.validate(view.to_json(), {"$defs": schema["$defs"], "$ref": "#/$defs/record_view"})
    assert RecordView.from_json(None) == RecordView() and RecordView().is_default and not RECORD_VIEW.is_default
