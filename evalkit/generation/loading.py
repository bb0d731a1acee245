"""Turn a CheckpointRef into a ready diffusers pipeline, and fingerprint what was loaded.

A training folder's checkpoints share a base (text encoder, VAE, tokenizer): the base is
loaded once and only the denoiser is swapped per step, and the text-side fingerprint stays
the same so prompt embeddings are reused. Pickled weights are refused unless the user opted
in; then they go through torch.load(weights_only=True) only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_file, sha256_json
from evalkit.generation.adapters import Adapter, adapter_for, denoiser_of
from evalkit.generation.checkpoints import (
    PICKLE_SUFFIXES,
    CheckpointRef,
    HubPipeline,
    PipelineDir,
    SingleFile,
    TrainingStep,
)
from evalkit.runtime.assets import resolve_hub_snapshot
from evalkit.runtime.quiet import quiet_loading

if TYPE_CHECKING:
    from diffusers.models import ModelMixin

WEIGHT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
HASHED_SUFFIXES = (*WEIGHT_SUFFIXES, ".json", ".txt", ".model")
TEXT_COMPONENT_PREFIXES = ("text_encoder", "tokenizer")
HUB_PATTERNS = ["model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors"]


@dataclass
class LoadedCheckpoint:
    ref: CheckpointRef
    pipe: Any
    adapter: Adapter
    fingerprint: str  # everything that decides the weights the pipeline runs
    text_fingerprint: str  # what decides prompt embeddings (text encoders + tokenizers)
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def denoiser(self) -> ModelMixin:
        return denoiser_of(self.pipe, self.adapter)


@dataclass
class _Base:
    key: str
    folder: Path
    pipe: Any
    adapter: Adapter
    files: dict[str, str]  # relative path -> sha256
    record: dict[str, Any]


class PipelineLoader:
    """Loads checkpoints on one device and dtype, keeping the last base pipeline."""

    def __init__(self, device: torch.device, dtype: torch.dtype, allow_pickle: bool = False) -> None:
        self.device = device
        self.dtype = dtype
        self.allow_pickle = allow_pickle
        self._base: _Base | None = None

    def load(self, ref: CheckpointRef) -> LoadedCheckpoint:
        match ref.source:
            case PipelineDir() | HubPipeline():
                base = self._load_base(ref.source, fresh_denoiser=True)
                return LoadedCheckpoint(ref, base.pipe, base.adapter, sha256_json(base.files),
                                        _text_fingerprint(base.files), {**base.record})
            case TrainingStep():
                return self._load_training_step(ref, ref.source)
            case SingleFile():
                return self._load_single_file(ref, ref.source)
        raise AssertionError(ref.source)

    # -- bases -----------------------------------------------------------------------------
    def _load_base(self, source: PipelineDir | HubPipeline, fresh_denoiser: bool) -> _Base:
        folder, record = _locate(source)
        key = str(folder.resolve())
        if self._base is not None and self._base.key == key and not fresh_denoiser:
            return self._base
        self._base = None  # release the previous pipeline before loading the next
        files = _hash_pipeline_files(folder, self.allow_pickle)
        pipe = _from_pretrained(folder, self.dtype, self.allow_pickle).to(self.device)
        adapter = adapter_for(type(pipe).__name__)
        self._base = _Base(key, folder, pipe, adapter, files, record)
        return self._base

    def _load_training_step(self, ref: CheckpointRef, step: TrainingStep) -> LoadedCheckpoint:
        base = self._load_base(step.base, fresh_denoiser=False)
        denoiser = _load_denoiser(step.denoiser_dir, self.dtype, self.allow_pickle).to(self.device)
        setattr(base.pipe, base.adapter.denoiser, denoiser)
        step_files = _hash_folder(step.denoiser_dir, step.denoiser_dir.parent)
        fingerprint = sha256_json({"base": base.files, "denoiser": step_files})
        record = {**base.record, "kind": "training_step", "checkpoint_folder": str(step.folder),
                  "denoiser_folder": step.denoiser_dir.name, "base_folder": str(base.folder)}
        return LoadedCheckpoint(ref, base.pipe, base.adapter, fingerprint, _text_fingerprint(base.files), record)

    def _load_single_file(self, ref: CheckpointRef, single: SingleFile) -> LoadedCheckpoint:
        state = _read_state_dict(single.path, single.pickled)
        file_hash = sha256_file(single.path)
        record_extra = {"kind": "single_file", "file": str(single.path), "file_sha256": file_hash}
        if any(k.startswith("model.diffusion_model.") for k in state):
            folder, base_record = _locate(single.base)
            pipe = _from_single_file(single.path, folder, self.dtype).to(self.device)
            adapter = adapter_for(type(pipe).__name__)
            self._base = None
            fingerprint = sha256_json({"file": file_hash, "configs": _hash_configs(folder)})
            record = {**base_record, **record_extra, "layout": "ldm", "base_folder": str(folder)}
            return LoadedCheckpoint(ref, pipe, adapter, fingerprint, fingerprint, record)
        base = self._load_base(single.base, fresh_denoiser=False)
        current = denoiser_of(base.pipe, base.adapter)
        if set(state) != set(current.state_dict()):
            raise EvalkitError(
                f"{single.path} matches neither the original (LDM) checkpoint layout nor the keys of "
                f"the base pipeline's {base.adapter.denoiser}",
                "give the checkpoint's matching --base, or a full pipeline folder instead",
            )
        denoiser = current.from_config(current.config)  # a classmethod of the denoiser's own class
        denoiser.load_state_dict(state, strict=True)
        setattr(base.pipe, base.adapter.denoiser, denoiser.to(device=self.device, dtype=self.dtype))
        fingerprint = sha256_json({"base": base.files, "denoiser": file_hash})
        record = {**base.record, **record_extra, "layout": "diffusers-denoiser", "base_folder": str(base.folder)}
        return LoadedCheckpoint(ref, base.pipe, base.adapter, fingerprint, _text_fingerprint(base.files), record)


def _locate(source: PipelineDir | HubPipeline) -> tuple[Path, dict[str, Any]]:
    match source:
        case PipelineDir(path=path):
            return path, {"kind": "pipeline", "path": str(path.resolve())}
        case HubPipeline(repo_id=repo_id, revision=revision):
            folder = resolve_hub_snapshot(repo_id, revision, allow_patterns=HUB_PATTERNS)
            return folder, {"kind": "hub", "repo_id": repo_id, "revision": revision, "snapshot": folder.name}
    raise AssertionError(source)


def _components(folder: Path) -> list[str]:
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    return sorted(k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0])


def _hash_folder(folder: Path, root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix in HASHED_SUFFIXES}


def _hash_pipeline_files(folder: Path, allow_pickle: bool) -> dict[str, str]:
    files = {"model_index.json": sha256_file(folder / "model_index.json")}
    for component in _components(folder):
        sub = folder / component
        if not sub.is_dir():
            raise EvalkitError(f"pipeline folder {folder} lists {component} but has no {component}/ folder",
                               "the folder is incomplete; re-save or re-download it")
        hashed = _hash_folder(sub, folder)
        weights = [p for p in hashed if p.endswith(WEIGHT_SUFFIXES)]
        if weights and not allow_pickle and not any(p.endswith(".safetensors") for p in weights):
            raise EvalkitError(f"{sub} holds only pickled weights ({Path(weights[0]).name})",
                               "re-save with safetensors, or pass --allow-pickle to load with weights_only=True")
        files.update(hashed)
    return files


def _hash_configs(folder: Path) -> dict[str, str]:
    return {p: h for p, h in _hash_pipeline_files(folder, allow_pickle=True).items() if not p.endswith(WEIGHT_SUFFIXES)}


def _text_fingerprint(files: dict[str, str]) -> str:
    return sha256_json({p: h for p, h in files.items() if p.startswith(TEXT_COMPONENT_PREFIXES)})


def _from_pretrained(folder: Path, dtype: torch.dtype, allow_pickle: bool) -> Any:
    from diffusers import DiffusionPipeline

    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    refuse_custom_code(folder, index)
    adapter_for(str(index.get("_class_name", "?")))  # refuse unsupported pipelines before loading
    # Components saved as [null, null] (e.g. SD3 without its T5) must be passed as None again.
    absent = {k: None for k, v in index.items() if isinstance(v, list) and not any(v)}
    try:
        with quiet_loading():
            return DiffusionPipeline.from_pretrained(
                str(folder), torch_dtype=dtype, use_safetensors=None if allow_pickle else True,
                local_files_only=True, **absent,
            )
    except (OSError, ValueError, json.JSONDecodeError, RuntimeError) as e:
        raise EvalkitError(f"could not load the pipeline in {folder}: {_first_line(e)}",
                           "the folder is broken or incomplete; re-save or re-download it") from e


TRUSTED_LIBRARIES = ("diffusers", "transformers")
NO_REMOTE_CODE = ("re-save it with diffusers' own classes (evalkit never runs code shipped with a checkpoint: "
                  "no custom_pipeline, trust_remote_code or auto_map)")


def refuse_custom_code(folder: Path, index: dict[str, Any]) -> None:
    """A pipeline folder that names code of its own (a custom pipeline class, a component from a
    module other than diffusers/transformers, an `auto_map` in a config) is refused by name before
    diffusers could import anything from it."""
    name = index.get("_class_name")
    if not isinstance(name, str):
        raise EvalkitError(f"{folder}/model_index.json names a custom pipeline class {name!r}", NO_REMOTE_CODE)
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or not spec or spec[0] is None:
            continue
        if spec[0] not in TRUSTED_LIBRARIES:
            raise EvalkitError(f"{folder}/model_index.json takes its {component} from custom code "
                               f"({spec[0]}.{spec[1] if len(spec) > 1 else '?'})", NO_REMOTE_CODE)
        config = folder / component / "config.json"
        if config.is_file() and "auto_map" in _json_or_empty(config):
            raise EvalkitError(f"{config} maps its classes to custom code (auto_map)", NO_REMOTE_CODE)


def _json_or_empty(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # an unreadable config is diffusers' to report (the folder is broken)
    return value if isinstance(value, dict) else {}


def _load_denoiser(folder: Path, dtype: torch.dtype, allow_pickle: bool) -> torch.nn.Module:
    import diffusers

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise EvalkitError(f"{folder}/config.json is unreadable ({_first_line(e)})",
                           "the checkpoint is broken; re-save or delete it") from e
    cls = getattr(diffusers, str(config.get("_class_name", "")), None)
    if cls is None:
        raise EvalkitError(f"{folder} holds an unknown model class {config.get('_class_name')!r}",
                           "evalkit loads diffusers UNet/transformer checkpoints")
    try:
        with quiet_loading():
            return cls.from_pretrained(str(folder), torch_dtype=dtype,
                                       use_safetensors=None if allow_pickle else True)
    except (OSError, ValueError, RuntimeError) as e:
        raise EvalkitError(f"could not load {folder}: {_first_line(e)}",
                           "the checkpoint is broken or does not match its config; re-save or delete it") from e


def _read_state_dict(path: Path, pickled: bool) -> dict[str, torch.Tensor]:
    try:
        if pickled:
            state = torch.load(path, map_location="cpu", weights_only=True)
            while isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            return state
        from safetensors.torch import load_file

        return load_file(str(path))
    except Exception as e:  # any decoding failure means the file is not a usable checkpoint
        raise EvalkitError(f"could not read checkpoint {path}: {_first_line(e)}",
                           "the file is truncated or not a checkpoint; re-download or re-export it") from e


def _from_single_file(path: Path, base_folder: Path, dtype: torch.dtype) -> Any:
    import diffusers
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    index = json.loads((base_folder / "model_index.json").read_text(encoding="utf-8"))
    class_name = str(index.get("_class_name", ""))
    adapter_for(class_name)
    cls = getattr(diffusers, class_name)
    hint = "check that --base is the pipeline this file belongs to"
    try:
        with quiet_loading():
            pipe = cls.from_single_file(str(path), config=str(base_folder), torch_dtype=dtype,
                                        local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError, SingleFileComponentError) as e:
        raise EvalkitError(f"could not load single-file checkpoint {path} with configs from {base_folder}: "
                           f"{_first_line(e)}", hint) from e
    # A key missing from the file can leave a parameter on the meta device without an error.
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            empty = [n for n, p in component.named_parameters() if p.is_meta]
            if empty:
                raise EvalkitError(f"{path} lacks weights for {name} ({empty[0]} and {len(empty) - 1} more)",
                                   hint)
    return pipe


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
