"""The output folder layout: every path and file name under OUT/<model>/ and OUT/<model>/<step>/.

Each stage hands the next one files, so the names of those files are a contract between
generation, scoring, results, publishing and the CI gate. They are spelled here and nowhere
else; every stage asks a `StepDir` (or `ModelDir`) for a path or a reader:

    OUT/<model>/<step>/generation.json                   what the images are (checkpoint, protocol, prompt sets)
    OUT/<model>/<step>/manifest[.shard-i-of-N].jsonl     one row per written image (append-only, per shard)
    OUT/<model>/<step>/images/<set>/<prompt-id>_<k>.png   (images made elsewhere keep their suffix)
    OUT/<model>/<step>/prompts/<set>.jsonl               free prompts that came with images made elsewhere
    OUT/<model>/<step>/scores/<metric>/<fp16>[.shard-i-of-N].jsonl   per-image records of one metric fingerprint
    OUT/<model>/<step>/scores/<metric>/<fp16>.summary.json, <fp16>.units.json
    OUT/<model>/<step>/shard-i-of-N.json                 a finished shard's report (until `merge` consumes it)
    OUT/<model>/<step>/profile.json                      `evalkit profile --out` (costs)
    OUT/<model>/<step>/run.json                          the step's results, written last
    OUT/<model>/curves/<metric>.csv|json|png|svg, compute.json
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_bytes
from evalkit.fileio.jsonfile import read_json_document, read_json_object
from evalkit.fileio.lockfile import exclusive
from evalkit.fileio.pngio import remove_orphaned_temporaries, write_atomic
from evalkit.fileio.safenames import require_folder_name
from evalkit.fileio.schemacheck import schema_problem
from evalkit.generation.manifest import ManifestRow, read_manifest_rows
from evalkit.generation.record import GENERATION_SCHEMA, GenerationRecord, schema_path

GENERATION_FILE = "generation.json"
RUN_FILE = "run.json"
PROFILE_FILE = "profile.json"
IMAGES_DIR = "images"
PROMPTS_DIR = "prompts"  # free prompts of images scored from elsewhere (evalkit.intake)
SCORES_DIR = "scores"
CURVES_DIR = "curves"
COMPUTE_FILE = "compute.json"
MANIFEST_GLOB = "manifest*.jsonl"
SHARD_SUFFIX = ".shard-{index}-of-{count}"  # the per-shard files of manifests and score records
SHARD_REPORT = "shard-{index}-of-{count}.json"
SHARD_REPORT_PATTERN = re.compile(r"shard-(\d+)-of-(\d+)\.json")
LOCK_FILE = ".{stage}{shard}.lock"  # held by the one process writing a stage of this folder (fileio.lockfile)
FINGERPRINT_CHARS = 16  # score files are named by the metric fingerprint's first characters
FINAL = "final"  # the step label of a checkpoint that is not a training step
REGENERATE = "delete it and re-run `evalkit generate` with the same --out (finished images are kept)"
REPROFILE = "delete it and re-run `evalkit profile` with the same --out"


def safe_name(text: str) -> str:
    """A folder-safe rendering of a model name (hub ids keep their owner: a/b -> a--b)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("/", "--")).strip("-.")
    return cleaned or "model"


def _file_stem(prompt_id: str) -> str:
    """Prompt ids become file names; unsafe ids get a readable form plus a hash to stay unique."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", prompt_id) and len(prompt_id) <= 120:
        return prompt_id
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", prompt_id)[:80].strip("._") or "prompt"
    return f"{readable}-{sha256_bytes(prompt_id.encode('utf-8'))[:10]}"


def _shard_suffix(shard_index: int, shard_count: int) -> str:
    return "" if shard_count == 1 else SHARD_SUFFIX.format(index=shard_index, count=shard_count)


def step_label(step: int | None) -> str:
    """The folder name of a step: the training step, or `final` for a checkpoint without one."""
    return FINAL if step is None else str(step)


@dataclass(frozen=True)
class ScoreFiles:
    """The files of one metric fingerprint in a step folder."""

    records: Path
    summary: Path
    units: Path


@dataclass(frozen=True)
class StepDir:
    """One checkpoint's folder: OUT/<model>/<step>/."""

    path: Path

    @classmethod
    def of(cls, out: Path, model: str, label: str) -> StepDir:
        return ModelDir.of(out, model).step(label)

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def model_dir(self) -> ModelDir:
        return ModelDir(self.path.parent)

    @property
    def generation_json(self) -> Path:
        return self.path / GENERATION_FILE

    @property
    def run_json(self) -> Path:
        return self.path / RUN_FILE

    @property
    def profile_json(self) -> Path:
        return self.path / PROFILE_FILE

    def read_profile(self) -> dict[str, Any] | None:
        """profile.json's cost record (the JSON boundary: run.json stores it as written), or None."""
        if not self.profile_json.is_file():
            return None
        return read_json_object(self.profile_json, REPROFILE)

    def write_profile(self, record: dict[str, Any]) -> Path:
        write_atomic(self.profile_json, (json.dumps(record, indent=2) + "\n").encode("utf-8"))
        return self.profile_json

    def manifest(self, shard_index: int = 0, shard_count: int = 1) -> Path:
        """The manifest one writer appends to: one file per shard, so no two processes share a file."""
        return self.path / f"manifest{_shard_suffix(shard_index, shard_count)}.jsonl"

    def manifests(self) -> list[Path]:
        """Every shard's manifest, in name order (readers take the union)."""
        return sorted(self.path.glob(MANIFEST_GLOB))

    def read_manifest(self) -> dict[str, ManifestRow]:
        """Latest row per image file across every shard's manifest."""
        return read_manifest_rows(self.manifests())

    @staticmethod
    def image_file(prompt_set: str, prompt_id: str, k: int, suffix: str = ".png") -> str:
        """An image's path relative to the step folder, as manifests record it (images made elsewhere
        keep their own format's suffix)."""
        folder = require_folder_name("prompt set", prompt_set, "rename the prompt set")
        return f"{IMAGES_DIR}/{folder}/{_file_stem(prompt_id)}_{k}{suffix}"

    def external_prompts(self, prompt_set: str) -> Path:
        """The prompt file of a set of free prompts that came with images made elsewhere (generation.json
        records it as the set's source, so scoring reloads the prompts from the step folder itself)."""
        name = require_folder_name("prompt set", prompt_set, "rename the prompt set")
        return self.path / PROMPTS_DIR / f"{name}.jsonl"

    def scores(self, metric: str, fingerprint: str) -> ScoreFiles:
        folder = require_folder_name("metric", metric, "rename the metric in its card")
        stem = self.path / SCORES_DIR / folder / fingerprint[:FINGERPRINT_CHARS]
        return ScoreFiles(stem.with_name(stem.name + ".jsonl"), stem.with_name(stem.name + ".summary.json"),
                          stem.with_name(stem.name + ".units.json"))

    def score_records(self, metric: str, fingerprint: str, shard_index: int = 0, shard_count: int = 1) -> Path:
        """The record file one writer appends to: the step's own, or one per shard (merged by `merge`)."""
        records = self.scores(metric, fingerprint).records
        return records.with_name(records.name.removesuffix(".jsonl") + _shard_suffix(shard_index, shard_count)
                                 + ".jsonl")

    def score_shard_records(self, metric: str, fingerprint: str) -> list[Path]:
        """Every shard's record file of one metric fingerprint, in name order (not the step's own)."""
        records = self.scores(metric, fingerprint).records
        return sorted(records.parent.glob(records.name.removesuffix(".jsonl") + ".shard-*-of-*.jsonl"))

    def shard_report(self, shard_index: int, shard_count: int) -> Path:
        return self.path / SHARD_REPORT.format(index=shard_index, count=shard_count)

    def shard_reports(self) -> list[tuple[int, int, Path]]:
        """(index, count, path) of every finished shard's report here, by count then index."""
        found = []
        for path in self.path.glob("shard-*-of-*.json") if self.path.is_dir() else []:
            match = SHARD_REPORT_PATTERN.fullmatch(path.name)
            if match:
                found.append((int(match[1]), int(match[2]), path))
        return sorted(found, key=lambda t: (t[1], t[0]))

    def relative(self, path: Path) -> str:
        """`path` as recorded inside the step folder's own files (POSIX, relative)."""
        return path.relative_to(self.path).as_posix()

    def remove_orphaned_temporaries(self) -> int:
        """Drop the half-written files of killed writers (never trusted); a live writer's are kept."""
        return remove_orphaned_temporaries([self.path], recursive=True)

    def lock(self, stage: str, shard_index: int = 0, shard_count: int = 1,
             wait: bool = False) -> AbstractContextManager[None]:
        """Exclusive use of one stage of this folder ("generate" per shard, "score" for records and
        run.json): a second process waits (`wait`) or is refused with a line naming the holder; a
        dead process's lock is free."""
        return exclusive(self.path / LOCK_FILE.format(stage=stage, shard=_shard_suffix(shard_index, shard_count)),
                         wait=wait,
                         what=f"{self.path} ({stage})",
                         hint="wait for that process to finish, or pass another --out")

    def is_generated(self) -> bool:
        return self.generation_json.is_file()

    def is_complete(self) -> bool:
        """A step is complete once its run.json exists (written last)."""
        return self.run_json.is_file()

    def read_generation(self) -> GenerationRecord:
        """generation.json, validated against its schema (one line naming the file and the field)."""
        path = self.generation_json
        value = read_json_document(path, "schema", GENERATION_SCHEMA, REGENERATE)
        problem = schema_problem(value, schema_path())
        if problem is not None:
            raise EvalkitError(f"{path} is garbled: {problem}", REGENERATE)
        return GenerationRecord.from_json(value)

    def write_generation(self, record: GenerationRecord) -> None:
        """Replace generation.json atomically (strict JSON: a NaN setting is a bug upstream, never a file)."""
        text = json.dumps(record.to_json(), indent=2, sort_keys=True, allow_nan=False)
        write_atomic(self.generation_json, (text + "\n").encode("utf-8"))


@dataclass(frozen=True)
class ModelDir:
    """One model's folder: OUT/<model>/, holding its step folders and curves."""

    path: Path

    @classmethod
    def of(cls, out: Path, model: str) -> ModelDir:
        return cls(Path(out) / model)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def curves_dir(self) -> Path:
        return self.path / CURVES_DIR

    @property
    def compute_json(self) -> Path:
        return self.curves_dir / COMPUTE_FILE

    def curve_file(self, metric: str, suffix: str) -> Path:
        """curves/<metric><suffix> (.csv, .json, .png, .svg)."""
        return self.curves_dir / f"{metric}{suffix}"

    def step(self, label: str) -> StepDir:
        return StepDir(self.path / label)

    def complete_training_steps(self) -> list[tuple[int, StepDir]]:
        """(step, folder) of every complete step folder named by an integer step, by step."""
        found = []
        for child in self.path.iterdir() if self.path.is_dir() else []:
            step = StepDir(child)
            if child.is_dir() and child.name.isdigit() and step.is_complete():
                found.append((int(child.name), step))
        return sorted(found, key=lambda pair: pair[0])


def find_step_dirs(path: Path) -> list[StepDir]:
    """A step folder itself, or every generated step folder below a model or output folder."""
    path = Path(path)
    if StepDir(path).is_generated():
        return [StepDir(path)]
    found = sorted(p.parent for p in path.rglob(GENERATION_FILE)) if path.is_dir() else []
    if not found:
        raise EvalkitError(f"{path} holds no generated images (no {GENERATION_FILE} below it)",
                           "run `evalkit generate` first, or point at its --out folder")
    return [StepDir(p) for p in found]


def walk_run_files(root: Path) -> Iterator[Path]:
    """Every run.json below `root`; a folder holding one is a complete step folder, not searched further
    (keeps the walk cheap on output folders with many images)."""
    for folder, subfolders, files in os.walk(root):
        if RUN_FILE in files:
            subfolders[:] = []
            yield (Path(folder) / RUN_FILE).resolve()
        else:
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
