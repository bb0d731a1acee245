"""The append-only record of which images exist and what their bytes hash to.

One JSON object per line, appended and fsynced after the image's rename (evalkit.fileio.jsonl), so
a row never refers to a file that is not complete. Sharded writers each append to their own
file; readers take the union of `manifest*.jsonl`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from evalkit.fileio.jsonl import append_rows, read_rows


@dataclass(frozen=True)
class ManifestRow:
    prompt_set: str
    prompt_id: str
    prompt_sha256: str  # the text the image was made from; a changed prompt is regenerated
    k: int
    seed: int
    file: str  # relative to the step folder
    sha256: str
    seconds: float  # this sample's share of its batch's wall time
    batch_size: int
    # The pipeline's float output held NaN or ±inf (fp16 overflow, broken weights): the PNG is what
    # quantising it gives (often all black). Written only when true, so clean manifests stay as they were.
    nonfinite: bool = False
    # A torch.compile'd denoiser made it (generation.compiling): its floats differ from eager by rounding.
    # Written only when true, like nonfinite.
    compiled: bool = False


_FIELDS = {f.name for f in fields(ManifestRow)}
_OPTIONAL = {"nonfinite", "compiled"}


def read_manifest_rows(paths: Iterable[Path]) -> dict[str, ManifestRow]:
    """Latest row per file across these manifests (a step folder's: evalkit.stepdir.StepDir.read_manifest)."""
    rows: dict[str, ManifestRow] = {}
    for path in paths:
        for raw in read_rows(path):
            if _FIELDS - _OPTIONAL <= set(raw) <= _FIELDS:
                row = ManifestRow(**raw)
                rows[row.file] = row
    return rows


def append_manifest(path: Path, rows: Iterable[ManifestRow]) -> None:
    append_rows(path, [{k: v for k, v in asdict(r).items() if k not in _OPTIONAL or v} for r in rows])
