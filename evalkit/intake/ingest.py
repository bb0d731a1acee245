"""Images made elsewhere become a step folder, so everything after generation works on them unchanged.

`evalkit score` on an image folder, list or saved dataset lands here first. The images are read,
hashed and decoded, and their prompts matched (`evalkit.intake.match`), all before anything is
written: an image that does not decode, a missing or duplicate id or a prompt that is not the
set's text is one line and an untouched --out. Then OUT/<model>/<step>/ gets what `evalkit generate`
would have written: generation.json (the checkpoint is the image set, pinned by the hashes of its
images; the protocol is the user's declaration, `ExternalProtocol`), the images' bytes as given
(their own format), a manifest, and a prompt file for free prompts. The store, resume, run.json,
leaderboard and check then apply as to generated images. A killed intake resumes: images already
in the manifest with the same hash are not copied again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_bytes, sha256_json
from evalkit.fileio.pngio import write_atomic
from evalkit.generation.manifest import ManifestRow, append_manifest
from evalkit.generation.record import GeneratedCheckpoint, GeneratedPromptSet, GenerationRecord
from evalkit.intake.match import Matched, match
from evalkit.intake.sources import Source, read_source
from evalkit.prompts.sets import Prompt, PromptSet, load_prompt_set
from evalkit.results.model import ExternalProtocol, Protocol
from evalkit.runtime.provenance import git_commit, library_versions
from evalkit.stepdir import StepDir

READ_WORKERS = 4  # image reads and decodes: mostly I/O and zlib, which release the GIL
NO_SEED = -1  # the manifest's seed of an image evalkit did not make
MANIFEST_CHUNK = 256
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


@dataclass(frozen=True)
class Declaration:
    """What the user says about how the images were made (run.json's external protocol)."""

    note: str
    same_as: Protocol | None = None  # --same-protocol-as: the evalkit protocol they claim to follow

    def __post_init__(self) -> None:
        if not self.note.strip():
            raise EvalkitError("images made elsewhere need --protocol-note saying how they were made",
                               'e.g. --protocol-note "SD1.5, DPM++ 25 steps, cfg 7, seed 0, 512px, from our sampler"')

    def protocol(self, images_sha256: str, n_images: int, resolution: tuple[int, int] | None) -> ExternalProtocol:
        fingerprint = (self.same_as.fingerprint if self.same_as is not None
                       else sha256_json({"kind": ExternalProtocol.KIND, "note": self.note.strip()}))
        return ExternalProtocol(self.note.strip(), images_sha256, n_images, resolution, self.same_as, fingerprint)


@dataclass(frozen=True)
class Checked:
    """An image that decoded, with what the step folder records of it."""

    matched: Matched
    sha256: str
    size: tuple[int, int]
    file: str  # relative to the step folder


@dataclass(frozen=True)
class Intake:
    step_dir: StepDir
    source: Source
    images: int
    copied: int  # this call (the rest were there from an earlier, interrupted intake)


def ingest(source_path: Path, step_dir: StepDir, model: str, step: int | None, declaration: Declaration,
           default_set: str = "") -> Intake:
    """Check every image and prompt of the source, then write the step folder (see the module)."""
    source = read_source(source_path)
    matching = match(source.images, default_set)
    checked = _check_images(matching.images)
    files = sorted((c.file, c.sha256) for c in checked)
    sizes = {c.size for c in checked}
    protocol = declaration.protocol(sha256_json(files), len(files), next(iter(sizes)) if len(sizes) == 1 else None)
    checkpoint = GeneratedCheckpoint(model, step, protocol.images_sha256, "",
                                     {"kind": "external", "format": source.kind, "path": str(source_path.resolve())})
    existing = step_dir.read_generation() if step_dir.is_generated() else None
    if existing is not None and (existing.checkpoint.fingerprint, existing.protocol_fingerprint) != \
            (checkpoint.fingerprint, protocol.fingerprint):
        raise EvalkitError(f"{step_dir.path} already holds other images or another protocol declaration",
                           "give another --model or --step, or another --out")
    with step_dir.lock("generate"):
        free_sets = {name: _write_free_set(step_dir, name, prompts) for name, prompts in matching.free.items()}
        sets = {**{n: GeneratedPromptSet.of(s) for n, s in matching.builtin.items()},
                **{n: GeneratedPromptSet.of(s) for n, s in free_sets.items()}}
        prompt_sets = {**matching.builtin, **free_sets}
        provenance = {"versions": library_versions(), "git_commit": git_commit(),
                      "intake": {"source": str(source_path.resolve()), "format": source.kind}}
        step_dir.write_generation(GenerationRecord(checkpoint, protocol.to_json(), dict(sorted(sets.items())),
                                                   provenance))
        copied = _copy_images(step_dir, checked, prompt_sets)
    return Intake(step_dir, source, len(checked), copied)


def _check_images(images: Sequence[Matched]) -> list[Checked]:
    with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
        return list(pool.map(_check, images))


def _check(matched: Matched) -> Checked:
    image = matched.image
    data = image.read()
    try:
        with Image.open(BytesIO(data)) as decoded:
            image_format, size = decoded.format or "", decoded.size
            decoded.convert("RGB").load()  # a truncated file fails here, not in the middle of scoring
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise EvalkitError(f"{image.where}: {image.name} cannot be decoded as an image ({str(e).splitlines()[0]})",
                           "re-export it as PNG or JPEG, or drop its row") from None
    suffix = SUFFIXES.get(image_format, f".{image_format.lower()}" if image_format else ".img")
    file = StepDir.image_file(matched.prompt_set, matched.prompt.id, matched.k, suffix)
    return Checked(matched, sha256_bytes(data), size, file)


def _write_free_set(step_dir: StepDir, name: str, prompts: Sequence[Prompt]) -> PromptSet:
    """The free prompts as a user prompt file in the step folder (what generation.json names as the
    set's source), read back through the prompt loader so they meet its rules (ids, lengths)."""
    path = step_dir.external_prompts(name)
    lines = [json.dumps({"id": p.id, "text": p.text}, ensure_ascii=False) for p in prompts]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if not path.is_file() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
    return load_prompt_set(path)


def _copy_images(step_dir: StepDir, checked: Sequence[Checked], prompt_sets: dict[str, PromptSet]) -> int:
    done = {row.file: row.sha256 for row in step_dir.read_manifest().values()}
    pending = [c for c in checked
               if done.get(c.file) != c.sha256 or not (step_dir.path / c.file).is_file()]
    manifest = step_dir.manifest()
    for start in range(0, len(pending), MANIFEST_CHUNK):
        rows = []
        for c in pending[start:start + MANIFEST_CHUNK]:
            data = c.matched.image.read()  # read again, not held: a full set is gigabytes
            if sha256_bytes(data) != c.sha256:
                raise EvalkitError(f"{c.matched.image.where}: {c.matched.image.name} changed while it was being read",
                                   "run again once the images are no longer being written")
            target = step_dir.path / c.file
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, data)
            prompt = prompt_sets[c.matched.prompt_set].by_id(c.matched.prompt.id)
            rows.append(ManifestRow(c.matched.prompt_set, prompt.id, sha256_bytes(prompt.text.encode("utf-8")),
                                    c.matched.k, NO_SEED, c.file, c.sha256, 0.0, 0))
        append_manifest(manifest, rows)  # after the files' renames: a row never names a missing file
    return len(pending)
