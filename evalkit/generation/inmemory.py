"""A diffusers pipeline object handed to `evalkit.evaluate()` by a training loop.

It has no files to hash, so its fingerprint comes from its state dicts, configs, tokenizers and
scheduler config (the same objects always give the same hashes); the generator gets it through a
loader stand-in; and what generation changes on it (scheduler, safety checker, progress bar,
eval mode) is undone afterwards so the training loop continues unaffected.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch

from evalkit.fileio.hashing import sha256_json
from evalkit.generation.checkpoints import CheckpointRef
from evalkit.generation.loading import TEXT_COMPONENT_PREFIXES, LoadedCheckpoint

VOLATILE_CONFIG_KEYS = ("transformers_version", "torch_dtype", "dtype")  # and every "_..." key


@dataclass(frozen=True)
class InMemoryPipeline:
    """CheckpointRef source for a pipeline object handed to `evaluate()`."""

    pipeline_class: str
    fingerprint: str



class restored:
    """Undo what generate.configure changes on a caller's pipeline (scheduler, safety checker,
    progress bar) and put modules back in training mode, so a training loop continues unaffected."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    def __enter__(self) -> None:
        pipe = self.pipe
        self.scheduler = pipe.scheduler
        self.safety = getattr(pipe, "safety_checker", None)
        self.progress = dict(getattr(pipe, "_progress_bar_config", {}) or {})
        self.training = {n: m.training for n, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
        for name in self.training:
            pipe.components[name].eval()

    def __exit__(self, *exc: object) -> None:
        pipe = self.pipe
        pipe.scheduler = self.scheduler
        if self.safety is not None:
            pipe.safety_checker = self.safety
        pipe._progress_bar_config = self.progress
        for name, training in self.training.items():
            pipe.components[name].train(training)


# -- in-memory pipelines -----------------------------------------------------------------------------
def pipeline_fingerprints(pipe: Any) -> tuple[str, str]:
    """(weights fingerprint, text-side fingerprint) of a pipeline object, from its state dicts,
    configs, tokenizers and scheduler config: the same objects always give the same hashes."""
    parts = {name: _component_digest(component) for name, component in sorted(pipe.components.items())}
    weights = sha256_json({"pipeline_class": type(pipe).__name__, "components": parts})
    text = sha256_json({n: d for n, d in parts.items() if n.startswith(TEXT_COMPONENT_PREFIXES)})
    return weights, text


def _component_digest(component: Any) -> Any:
    if component is None:
        return None
    digest: dict[str, Any] = {"class": type(component).__name__}
    if isinstance(component, torch.nn.Module):
        digest["config"] = _config_record(getattr(component, "config", None))
        digest["state"] = state_dict_digest(component.state_dict())
    elif hasattr(component, "backend_tokenizer"):
        # truncation/padding in the backend are call state (set by each padded call), not the tokenizer.
        backend = json.loads(component.backend_tokenizer.to_str())
        digest["tokenizer"] = sha256_json({k: v for k, v in backend.items() if k not in ("truncation", "padding")})
        digest["model_max_length"] = component.model_max_length
    elif hasattr(component, "get_vocab"):
        digest["vocab"] = sha256_json(sorted(component.get_vocab().items()))
    elif hasattr(component, "config"):
        digest["config"] = _config_record(component.config)
    return digest


def state_dict_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        h.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        if tensor.numel():
            # ndarray is a buffer; numpy's stubs declare __buffer__ only for Python >= 3.12
            h.update(tensor.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]
    return h.hexdigest()


def _config_record(config: Any) -> Any:
    if config is None:
        return None
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return _plain({k: v for k, v in values.items() if not k.startswith("_") and k not in VOLATILE_CONFIG_KEYS})


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def wrap_pipeline(pipe: Any, name: str, step: int | None) -> LoadedCheckpoint:
    """A LoadedCheckpoint for a pipeline object, as if PipelineLoader had loaded it."""
    from evalkit.generation.adapters import adapter_for

    adapter = adapter_for(type(pipe).__name__)
    weights, text = pipeline_fingerprints(pipe)
    ref = CheckpointRef(InMemoryPipeline(type(pipe).__name__, weights), name, step)  # type: ignore[arg-type]
    record = {"kind": "in_memory", "pipeline_class": type(pipe).__name__,
              "name_or_path": str(getattr(pipe, "name_or_path", "") or "")}
    return LoadedCheckpoint(ref, pipe, adapter, weights, text, record)


def native_resolution_of(loaded: LoadedCheckpoint) -> int:
    from evalkit.generation.adapters import native_resolution

    return native_resolution(loaded.pipe, loaded.adapter)


def pipeline_spec(pipe: Any, name: str) -> Any:
    """An evalkit.profile PipelineSpec from a pipeline object's module configs (for MAC counting)."""
    from evalkit.generation.adapters import adapter_for
    from evalkit.profile.configs import ComponentSpec, PipelineSpec
    adapter = adapter_for(type(pipe).__name__)
    components = []
    for key, module in sorted(pipe.components.items()):
        module_config = getattr(module, "config", None)
        if isinstance(module, torch.nn.Module) and module_config is not None:
            library = type(module).__module__.split(".")[0]
            config = module_config.to_dict() if hasattr(module_config, "to_dict") else dict(module_config)
            components.append(ComponentSpec(key, library, type(module).__name__, config, _role(key, adapter.denoiser)))
    return PipelineSpec(name, type(pipe).__name__, adapter.family, tuple(components), {"kind": "in_memory"})


def _role(key: str, denoiser: str) -> str:
    from evalkit.profile.configs import DENOISER, OTHER, TEXT_ENCODER, VAE

    if key == denoiser:
        return DENOISER
    if key.startswith("text_encoder"):
        return TEXT_ENCODER
    return VAE if key == "vae" else OTHER
