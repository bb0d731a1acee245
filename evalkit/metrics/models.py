"""Where a metric's model files come from, and their fingerprint.

A card names a model by hub id + revision or by local folder; both resolve through
evalkit.runtime.assets, so offline misses are one clear line. The fingerprint hashes the files the
metric will load (weights, configs, tokenizer), so a changed checkpoint changes the metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_file, sha256_json
from evalkit.metrics.cards import ModelRef
from evalkit.runtime.assets import resolve_hub_snapshot

MODEL_FILE_SUFFIXES = (".safetensors", ".json", ".txt", ".model")
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors"]


@dataclass(frozen=True)
class ResolvedModel:
    ref: ModelRef
    folder: Path
    files: dict[str, str]  # relative path -> sha256

    @property
    def fingerprint(self) -> str:
        return sha256_json(self.files)

    def record(self, **more: str) -> dict[str, str]:
        """What run.json says of this model (`metrics.api.ModelsRecorded`): where it came from and its hash."""
        return {"source": self.ref.source, "revision": self.ref.revision, "fingerprint": self.fingerprint, **more}


def resolve_model(ref: ModelRef) -> ResolvedModel:
    path = Path(ref.source).expanduser()
    if path.is_dir():
        folder = path
    elif path.is_absolute() or ref.source.startswith("."):
        raise EvalkitError(f"{ref.role} model folder {ref.source} does not exist",
                           "fix the path in the metric card")
    else:
        folder = resolve_hub_snapshot(ref.source, ref.revision, allow_patterns=HUB_PATTERNS)
    files = {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and p.suffix in MODEL_FILE_SUFFIXES}
    if not any(name.endswith(".safetensors") for name in files):
        raise EvalkitError(f"{ref.role} model {ref.source} has no .safetensors weights in {folder}",
                           f"fetch it with `hf download {ref.source} --revision {ref.revision}`")
    return ResolvedModel(ref, folder, files)
