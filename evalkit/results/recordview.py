"""How a metric's per-image records are shown: which field is the image's score, which fields to list.

A metric that stores more than a number per image (TIFA: one record per question, with the
question, the expected answer and what the VQA model said) declares a `RecordView`; it travels
in run.json and entries.json so the site can show each image's score and records without
importing the metric (or torch). The default view — score = mean of the records' `value`, no
listed fields — fits metrics with one numeric record per image and is not written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class RecordField:
    key: str  # the record's key
    label: str  # what the site calls it


@dataclass(frozen=True)
class RecordView:
    score: str = "value"  # the record field whose mean over an image's records is the image's score (bools count 0/1)
    fields: tuple[RecordField, ...] = ()  # listed per record, in this order; none: only the score is shown
    filter: str = ""  # a record field the site offers as a filter (TIFA: element_type); "" for none
    unit: str = ""  # what one record is ("question"), for counts such as "3 of 4 questions correct"

    @classmethod
    def from_json(cls, doc: JsonObject | None) -> RecordView:
        if not doc:
            return cls()
        return cls(doc.get("score", "value"), tuple(RecordField(f["key"], f["label"]) for f in doc.get("fields", [])),
                   doc.get("filter", ""), doc.get("unit", ""))

    def to_json(self) -> JsonObject:
        return {"score": self.score, "fields": [{"key": f.key, "label": f.label} for f in self.fields],
                "filter": self.filter, "unit": self.unit}

    @property
    def is_default(self) -> bool:
        return self == RecordView()

    def score_of(self, records: Sequence[Any]) -> tuple[float, int] | None:
        """(mean of the records' score field, how many), over records whose field is a finite number
        or a bool; None when there is none."""
        numbers = [float(v) for r in records if isinstance(r, dict) for v in [r.get(self.score)]
                   if isinstance(v, bool | int | float) and math.isfinite(float(v))]
        return (math.fsum(numbers) / len(numbers), len(numbers)) if numbers else None


# CLIP score and HPSv2 records hold the scaled `value` and the raw `cosine`: listed where the two differ.
COSINE_VIEW = RecordView(fields=(RecordField("cosine", "cosine"),))
