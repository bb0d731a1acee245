"""The COCO val2014 images a distribution metric compares against (FID, CMMD): where they are, and their cache.

coco-10k prompts name their COCO image (`data.coco_file`). A distribution metric needs those
images' features once: from `--coco-images DIR` the first time, then from the reference cache
(`fid_stats`: `<cache>/fid-refs/<key>.npz`, keyed by everything that changes the features — the
files' names, the model's hash, the preprocessing). The cache is keyed by file names so a later
run without --coco-images can still use it; the files' identity (folder, size, mtime), stored
beside an entry, stops it from being reused for other images with the same names whenever the
folder is given. Stat only: milliseconds for 10K files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_json
from evalkit.metrics import fid_stats
from evalkit.metrics.api import ImageItem
from evalkit.prompts.sets import PromptSet


@dataclass(frozen=True)
class CocoImages:
    folder: Path | None  # --coco-images; None: only cached reference features can be used
    metric: str  # what the messages call the metric ("FID")

    def coco_file(self, item: ImageItem) -> str:
        """The COCO image an item's prompt names, checked present when the folder is given (before hours
        of feature extraction)."""
        coco_file = item.prompt.data.get("coco_file") if item.prompt.data else None
        if not coco_file:
            raise EvalkitError(f"prompt {item.prompt.id} of {item.prompt_set} has no COCO image",
                               f"{self.metric} scores coco-10k prompts (they name their COCO val2014 image)")
        if self.folder is not None and not (self.folder / str(coco_file)).is_file():
            raise self.missing(str(coco_file))
        return str(coco_file)

    def preflight(self, prompts: PromptSet, weights: str) -> None:
        """Before generation: every prompt names its COCO image, and those images are in the folder
        (a stat each), or, without it, reference features with these weights are cached."""
        files = []
        for prompt in prompts:
            coco_file = prompt.data.get("coco_file") if prompt.data else None
            if not coco_file:
                raise EvalkitError(f"{self.metric} needs prompts that name their COCO image; {prompts.name} prompt "
                                   f"{prompt.id} names none", f"score {self.metric} on coco-10k")
            files.append(str(coco_file))
        coco_files = sorted(set(files))
        if self.folder is not None:
            self.identity(coco_files)
        elif not fid_stats.has_reference(sha256_json(coco_files), weights):
            raise self.missing(coco_files[0])

    def missing(self, coco_file: str) -> EvalkitError:
        if self.folder is None:
            return EvalkitError(f"{self.metric} needs the COCO val2014 images (first: {coco_file}); --coco-images is "
                                "not given", "pass --coco-images DIR (the folder of COCO_val2014_*.jpg)")
        return EvalkitError(f"COCO image {coco_file} is missing from --coco-images {self.folder}",
                            "pass --coco-images DIR holding every COCO_val2014 image of the prompts")

    def identity(self, coco_files: Sequence[str]) -> str:
        """Folder, size and mtime of every reference image (what a cache entry was computed from)."""
        folder = self.folder.resolve() if self.folder is not None else None
        stats = []
        for name in coco_files:
            path = folder / name if folder is not None else None
            if path is None or not path.is_file():
                raise self.missing(name)
            info = path.stat()
            stats.append([name, info.st_size, info.st_mtime_ns])
        return sha256_json({"folder": str(folder), "files": stats})

    def paths(self, coco_files: Sequence[str]) -> list[Path]:
        paths = []
        for name in coco_files:
            if self.folder is None or not (self.folder / name).is_file():
                raise self.missing(name)
            paths.append(self.folder / name)
        return paths

    def features(self, description: dict[str, Any], coco_files: Sequence[str],
                 compute: Callable[[], np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
        """The cached reference entry for `description` (its key and arrays), computed with `compute` (from
        `paths(coco_files)`) when missing or made from other files of the same names."""
        key = fid_stats.reference_key(description)
        cached = fid_stats.load_reference(key)
        if cached is not None and self.folder is None:
            return key, cached
        identity = self.identity(coco_files)
        if cached is not None and fid_stats.load_reference_meta(key).get("files") == identity:
            return key, cached
        return key, fid_stats.save_reference(key, {**description, "files": identity}, compute())
