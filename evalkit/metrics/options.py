"""Run-time inputs a metric may need that are not part of its card (e.g. local data paths)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricOptions:
    tifa_qa: str = ""  # path to tifa_v1.0_question_answers.json; empty: the hub dataset
    coco_images: str = ""  # folder of COCO_val2014_*.jpg for FID/KID references
