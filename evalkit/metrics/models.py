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

# What loading needs from a hub repository: configs, safetensors weights, tokenizer vocabularies (BERT's
# vocab.txt, T5's spiece.model, Qwen's merges.txt), chat templates (chat_template.jinja in newer repositories,
# hashed too: it changes the prompts). Pickled `pytorch_model*.bin` copies are never fetched.
MODEL_FILE_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".jinja")
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.jinja", "*.safetensors"]
PROCESSOR_FILE_SUFFIXES = (".json", ".txt", ".model", ".jinja")
PROCESSOR_PATTERNS = ["*.json", "*.txt", "*.model", "*.jinja"]


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
    resolved = _resolve(ref, HUB_PATTERNS, MODEL_FILE_SUFFIXES)
    if not any(name.endswith(".safetensors") for name in resolved.files):
        raise EvalkitError(f"{ref.role} model {ref.source} has no .safetensors weights in {resolved.folder}",
                           f"fetch it with `hf download {ref.source} --revision {ref.revision}`")
    return resolved


def resolve_processor(ref: ModelRef, required: str = "preprocessor_config.json") -> ResolvedModel:
    """A processor or tokenizer folder whose weights are not loaded (PickScore's processor is CLIP-H's,
    VQAScore's tokenizer FlanT5-XXL's): only its configs and vocabulary are fetched and hashed."""
    resolved = _resolve(ref, PROCESSOR_PATTERNS, PROCESSOR_FILE_SUFFIXES)
    if required not in resolved.files:
        raise EvalkitError(f"{ref.role} {ref.source} has no {required} in {resolved.folder}",
                           f"fetch it with `hf download {ref.source} --revision {ref.revision} --include '*.json' "
                           "'*.txt' '*.model'`")
    return resolved


def _resolve(ref: ModelRef, patterns: list[str], suffixes: tuple[str, ...]) -> ResolvedModel:
    path = Path(ref.source).expanduser()
    if path.is_dir():
        folder = path
    elif path.is_absolute() or ref.source.startswith("."):
        raise EvalkitError(f"{ref.role} model folder {ref.source} does not exist",
                           "fix the path in the metric card")
    else:
        folder = resolve_hub_snapshot(ref.source, ref.revision, allow_patterns=patterns)
    files = {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and p.suffix in suffixes}
    return ResolvedModel(ref, folder, files)
