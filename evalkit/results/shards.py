"""A finished shard's report, and the rules a set of reports must meet before they make one run.json.

A shard of a multi-process run (a torchrun rank, or `--shard i/N` in a SLURM array) writes
`shard-i-of-N.json` into the step folder last, once its images are generated and its records
scored: the file is the shard's "done" mark and says what it made — which checkpoint, protocol,
prompt sets and metric fingerprints, and exactly which image files. `merge` trusts the step's
files only when every report of one layout (0..N-1) is there, they agree with each other and with
generation.json, and no image is claimed twice; each refusal is one line naming the shard.
Reports are consumed by the merge (run.json then records the layout under provenance.shards).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.fileio.jsonfile import read_json_document
from evalkit.fileio.pngio import write_atomic
from evalkit.generation.record import GenerationRecord
from evalkit.stepdir import StepDir

SHARD_SCHEMA = "evalkit.shard/1"
RERUN = "re-run that shard with the same options and --out (finished images and records are kept), then merge"

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class ShardMetric:
    fingerprint: str
    n_images: int
    card: str = ""  # the card file it was made from ("" for a shipped metric name)

    def spec(self, name: str) -> str:
        return self.card or name


@dataclass(frozen=True)
class ShardReport:
    index: int
    count: int
    checkpoint_fingerprint: str
    protocol_fingerprint: str
    prompt_sets: dict[str, str]  # name -> fingerprint
    metrics: dict[str, ShardMetric]
    files: tuple[str, ...]  # the shard's image files, relative to the step folder
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    seconds: JsonObject = field(default_factory=dict)  # {"generate": s, "score": {metric: s}}

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def to_json(self) -> JsonObject:
        return {"schema": SHARD_SCHEMA, "index": self.index, "count": self.count,
                "checkpoint_fingerprint": self.checkpoint_fingerprint,
                "protocol_fingerprint": self.protocol_fingerprint, "prompt_sets": self.prompt_sets,
                "metrics": {name: {"fingerprint": m.fingerprint, "n_images": m.n_images, "card": m.card}
                            for name, m in sorted(self.metrics.items())},
                "host": self.host, "pid": self.pid, "seconds": self.seconds, "files": list(self.files)}

    @classmethod
    def from_json(cls, doc: JsonObject) -> ShardReport:
        metrics = {name: ShardMetric(str(m["fingerprint"]), int(m["n_images"]), str(m.get("card", "")))
                   for name, m in doc["metrics"].items()}
        return cls(int(doc["index"]), int(doc["count"]), str(doc["checkpoint_fingerprint"]),
                   str(doc["protocol_fingerprint"]), {str(k): str(v) for k, v in doc["prompt_sets"].items()},
                   metrics, tuple(str(f) for f in doc["files"]), str(doc.get("host", "")), int(doc.get("pid", 0)),
                   dict(doc.get("seconds", {})))


def write_report(folder: StepDir, report: ShardReport) -> Path:
    """Mark the shard finished (atomically: a half-written report is never read)."""
    path = folder.shard_report(report.index, report.count)
    write_atomic(path, (json.dumps(report.to_json(), indent=1, sort_keys=True) + "\n").encode("utf-8"))
    return path


def read_reports(folder: StepDir) -> list[ShardReport]:
    """The reports of the one layout present, checked complete and consistent with generation.json
    (empty when the folder holds none)."""
    found = folder.shard_reports()
    if not found:
        return []
    layouts = sorted({count for _, count, _ in found})
    if len(layouts) > 1:
        described = "; ".join(f"of {n}: " + ", ".join(str(i) for i, c, _ in found if c == n) for n in layouts)
        raise EvalkitError(f"{folder.path} holds shard reports of {len(layouts)} layouts ({described}), which "
                           "would count images twice",
                           "delete the reports (shard-*-of-N.json) of the layout you abandoned, then merge")
    count = layouts[0]
    present = {index for index, _, _ in found}
    missing = [i for i in range(count) if i not in present]
    if missing:
        raise EvalkitError(f"shard {missing[0]}/{count} of {folder.path} has not finished (no "
                           f"{folder.shard_report(missing[0], count).name}; {len(present)} of {count} reported)",
                           RERUN)
    reports = [_read_report(path, index, count) for index, count, path in found]
    check_consistent(folder, reports, folder.read_generation())
    return reports


def _read_report(path: Path, index: int, count: int) -> ShardReport:
    """The report in `path`, which must be the one its name says (shard `index` of `count`)."""
    doc = read_json_document(path, "schema", SHARD_SCHEMA, RERUN)
    try:
        report = ShardReport.from_json(doc)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise EvalkitError(f"{path} is garbled (field {e})", RERUN) from e
    if (report.index, report.count) != (index, count):
        raise EvalkitError(f"{path} is garbled: it reports shard {report.label}", RERUN)
    return report


def check_consistent(folder: StepDir, reports: Sequence[ShardReport], generation: GenerationRecord) -> None:
    """Every shard made the same thing as generation.json records, and each image belongs to one shard."""
    first = reports[0]
    sets = {name: s.fingerprint for name, s in generation.prompt_sets.items()}
    owner: dict[str, str] = {}
    for report in reports:
        where = f"shard {report.label} of {folder.path}"
        if report.checkpoint_fingerprint != generation.checkpoint.fingerprint:
            raise EvalkitError(f"{where} was made from other weights (checkpoint fingerprint "
                               f"{report.checkpoint_fingerprint[:12]}, generation.json has "
                               f"{generation.checkpoint.fingerprint[:12]})", RERUN)
        if report.protocol_fingerprint != generation.protocol_fingerprint:
            raise EvalkitError(f"{where} was made with another protocol (fingerprint "
                               f"{report.protocol_fingerprint[:12]}, generation.json has "
                               f"{generation.protocol_fingerprint[:12]})", RERUN)
        changed = sorted(n for n, fp in report.prompt_sets.items() if sets.get(n) != fp)
        if changed:
            raise EvalkitError(f"{where} used other prompts of {', '.join(changed)} than generation.json records",
                               RERUN)
        if report.metrics.keys() != first.metrics.keys():
            raise EvalkitError(f"{where} scored {', '.join(sorted(report.metrics)) or 'no metric'}, shard "
                               f"{first.label} scored {', '.join(sorted(first.metrics)) or 'no metric'}", RERUN)
        for name, metric in report.metrics.items():
            if metric.fingerprint != first.metrics[name].fingerprint:
                raise EvalkitError(f"{where} scored {name} with another card or model (fingerprint "
                                   f"{metric.fingerprint[:12]}, shard {first.label} has "
                                   f"{first.metrics[name].fingerprint[:12]})", RERUN)
        for file in report.files:
            if file in owner:
                raise EvalkitError(f"{file} of {folder.path} is claimed by shards {owner[file]} and {report.label}",
                                   "delete the report of the shard that should not have made it, re-run that "
                                   "shard, then merge")
            owner[file] = report.label


def shard_of(reports: Sequence[ShardReport], file: str) -> str:
    """Which shard claims an image ("no shard" when none does): what a refusal names."""
    for report in reports:
        if file in report.files:
            return f"shard {report.label}"
    return "no shard"


def provenance_record(reports: Sequence[ShardReport]) -> JsonObject:
    """What run.json keeps of the layout once the reports are consumed (never part of comparability)."""
    return {"count": reports[0].count, "hosts": sorted({r.host for r in reports}),
            "images": [len(r.files) for r in sorted(reports, key=lambda r: r.index)]}


def remove_reports(folder: StepDir, reports: Sequence[ShardReport]) -> None:
    for report in reports:
        folder.shard_report(report.index, report.count).unlink(missing_ok=True)
