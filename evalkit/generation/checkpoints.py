"""What the user pointed at, resolved into one reference per checkpoint to evaluate.

Each source form is its own dataclass, so loading dispatches on the form rather than on
which fields happen to be set. Resolution only looks at the file system and the hub id's
shape; nothing is downloaded or loaded here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from evalkit import stepdir
from evalkit.errors import EvalkitError
from evalkit.options import DEFAULTS, RunOptions, view
from evalkit.stepdir import safe_name

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
SAFE_SUFFIXES = (".safetensors",)
DENOISER_DIRS = ("unet", "transformer")
CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class PipelineDir:
    """A diffusers pipeline folder (model_index.json at its root)."""

    path: Path


@dataclass(frozen=True)
class HubPipeline:
    repo_id: str
    revision: str


@dataclass(frozen=True)
class SingleFile:
    """One weights file (original LDM layout, or a bare denoiser state dict) on a base
    pipeline that supplies configs and the components the file lacks."""

    path: Path
    base: PipelineDir | HubPipeline
    pickled: bool


@dataclass(frozen=True)
class TrainingStep:
    """checkpoint-N/<denoiser>[_ema] of a training run on top of a base pipeline."""

    folder: Path  # the checkpoint-N folder
    denoiser_dir: Path  # checkpoint-N/unet, unet_ema, transformer or transformer_ema
    base: PipelineDir | HubPipeline


Source = PipelineDir | HubPipeline | SingleFile | TrainingStep


@dataclass(frozen=True)
class CheckpointRef:
    source: Source
    name: str  # the model folder name under OUT/
    step: int | None  # training step when the source has one

    @property
    def step_label(self) -> str:
        """Folder name under OUT/<model>/: the step number, or 'final' for a released model."""
        return stepdir.step_label(self.step)

    @property
    def base(self) -> PipelineDir | HubPipeline:
        """The pipeline whose text encoder, VAE and tokenizer this checkpoint runs with."""
        match self.source:
            case SingleFile(base=b) | TrainingStep(base=b):
                return b
            case PipelineDir() | HubPipeline():
                return self.source
        raise AssertionError(self.source)


@dataclass(frozen=True)
class ResolveOptions:
    """The source options of evalkit.options.RunOptions: how a spec becomes checkpoints."""

    base: str = DEFAULTS.base  # pipeline folder or hub id for single files and training folders
    revision: str = DEFAULTS.revision
    ema: bool = DEFAULTS.ema
    name: str = DEFAULTS.name
    step: int = DEFAULTS.step  # override/assign the step of a single checkpoint; -1 keeps it
    allow_pickle: bool = DEFAULTS.allow_pickle

    @classmethod
    def of(cls, options: RunOptions) -> ResolveOptions:
        return view(cls, options)


def resolve(spec: str, options: ResolveOptions) -> list[CheckpointRef]:
    """All checkpoints `spec` names, in step order for training folders."""
    path = Path(spec).expanduser()
    if path.is_file():
        refs = [_single_file(path, options)]
    elif path.is_dir():
        refs = _directory(path, options)
    elif _HUB_ID.match(spec) and not spec.startswith((".", "/")):
        refs = [CheckpointRef(HubPipeline(spec, options.revision), options.name or safe_name(spec), None)]
    else:
        raise EvalkitError(
            f"checkpoint {spec!r} is neither an existing file or folder nor a hub id (owner/name)",
            "check the path, or give a hub id such as stabilityai/stable-diffusion-2-1-base",
        )
    if options.step >= 0:
        if len(refs) != 1:
            raise EvalkitError("step applies to one checkpoint, but this source has several",
                               "drop it; training folders take steps from checkpoint-N names", param="step")
        refs = [CheckpointRef(refs[0].source, refs[0].name, options.step)]
    return refs


def _base(options: ResolveOptions, fallback: Path | None, what: str) -> PipelineDir | HubPipeline:
    if options.base:
        base_path = Path(options.base).expanduser()
        if base_path.is_dir():
            _require_pipeline_dir(base_path, "base", param="base")
            return PipelineDir(base_path)
        if _HUB_ID.match(options.base):
            return HubPipeline(options.base, options.revision)
        raise EvalkitError(f"base {options.base!r} is neither a pipeline folder nor a hub id",
                           "pass a diffusers pipeline folder (with model_index.json) or a hub id", param="base")
    if fallback is not None:
        return PipelineDir(fallback)
    raise EvalkitError(f"{what} needs a base pipeline for its configs and other components",
                       "pass --base PIPELINE_DIR_OR_HUB_ID (the pipeline it was trained from)")


def _require_pipeline_dir(path: Path, what: str, param: str = "") -> None:
    index = path / "model_index.json"
    if not index.is_file():
        raise EvalkitError(f"{what} {path} is not a diffusers pipeline folder (no model_index.json)",
                           "point at the folder that pipeline.save_pretrained() wrote", param=param)
    try:
        json.loads(index.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise EvalkitError(f"{index} is not valid JSON ({e})", "restore or re-save the pipeline folder") from e


def _single_file(path: Path, options: ResolveOptions) -> CheckpointRef:
    suffix = path.suffix.lower()
    if suffix not in SAFE_SUFFIXES + PICKLE_SUFFIXES:
        raise EvalkitError(f"{path} is not a checkpoint file (expected .safetensors)",
                           "give a .safetensors file, a pipeline folder or a training output folder")
    pickled = suffix in PICKLE_SUFFIXES
    if pickled and not options.allow_pickle:
        raise EvalkitError(
            f"{path} is a pickled checkpoint; evalkit does not unpickle files by default",
            "convert it to .safetensors, or pass --allow-pickle to load it with torch.load(weights_only=True)",
        )
    base = _base(options, None, f"single-file checkpoint {path.name}")
    return CheckpointRef(SingleFile(path, base, pickled), options.name or safe_name(path.stem), None)


def _directory(path: Path, options: ResolveOptions) -> list[CheckpointRef]:
    steps = checkpoint_dirs(path)
    if steps:
        own = path if (path / "model_index.json").is_file() else None
        base = _base(options, own, f"training folder {path}")
        name = options.name or safe_name(path.resolve().name) + ("-ema" if options.ema else "")
        return [CheckpointRef(_training_step(d, base, options), name, n) for n, d in steps]
    match = CHECKPOINT_DIR.match(path.name)
    if match and any((path / d).is_dir() for d in DENOISER_DIRS + tuple(x + "_ema" for x in DENOISER_DIRS)):
        parent = path.resolve().parent
        own = parent if (parent / "model_index.json").is_file() else None
        base = _base(options, own, f"checkpoint folder {path}")
        name = options.name or safe_name(parent.name) + ("-ema" if options.ema else "")
        return [CheckpointRef(_training_step(path, base, options), name, int(match.group(1)))]
    if (path / "model_index.json").is_file():
        _require_pipeline_dir(path, "checkpoint")
        return [CheckpointRef(PipelineDir(path), options.name or safe_name(path.resolve().name), None)]
    raise EvalkitError(
        f"{path} is neither a diffusers pipeline folder (no model_index.json) "
        "nor a training output folder (no checkpoint-N/ subfolders)",
        "point at a folder written by pipeline.save_pretrained() or by a diffusers training script",
    )


def checkpoint_dirs(path: Path) -> list[tuple[int, Path]]:
    """checkpoint-N subfolders of a training output folder, by step (none when it is not a folder)."""
    if not path.is_dir():
        return []
    found = []
    for child in path.iterdir():
        match = CHECKPOINT_DIR.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def _training_step(folder: Path, base: PipelineDir | HubPipeline, options: ResolveOptions) -> TrainingStep:
    suffix = "_ema" if options.ema else ""
    for name in DENOISER_DIRS:
        candidate = folder / (name + suffix)
        if candidate.is_dir():
            _require_denoiser_weights(candidate, options.allow_pickle)
            return TrainingStep(folder, candidate, base)
    if options.ema:
        raise EvalkitError(f"{folder} has no unet_ema/ or transformer_ema/ folder",
                           "the run was trained without --use_ema; drop --ema to evaluate the non-EMA weights")
    raise EvalkitError(f"{folder} has no unet/ or transformer/ folder",
                       "is this a diffusers training checkpoint? LoRA-only checkpoints are not supported yet")


def _require_denoiser_weights(folder: Path, allow_pickle: bool) -> None:
    if not (folder / "config.json").is_file():
        raise EvalkitError(f"{folder} is incomplete: config.json is missing",
                           "the checkpoint may still be being written or was cut off; re-save or delete it")
    safe = list(folder.glob("*.safetensors"))
    pickled = [p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if not safe and not pickled:
        raise EvalkitError(f"{folder} is incomplete: no weights file",
                           "the checkpoint may still be being written or was cut off; re-save or delete it")
    if not safe and not allow_pickle:
        raise EvalkitError(f"{folder} holds only pickled weights ({pickled[0].name})",
                           "re-save with safetensors, or pass --allow-pickle to load with weights_only=True")
