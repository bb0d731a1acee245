"""Modules from configs alone: on the meta device for counting, on a real device for timing.

Built under `torch.device("meta")`, a module has every parameter's shape and dtype but no
storage, so an SDXL-sized pipeline costs a few MB of host memory and runs forwards on meta
tensors, which is all parameter and MAC counting need. The same builders with a real device
give random-weight modules for latency runs (no downloads).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import torch

from evalkit.errors import EvalkitError
from evalkit.profile.configs import ComponentSpec

META = torch.device("meta")


def component_class(spec: ComponentSpec) -> type:
    """The class a model_index.json entry names (diffusers, transformers or a diffusers pipeline module)."""
    if spec.library == "diffusers":
        import diffusers

        cls = getattr(diffusers, spec.class_name, None)
    elif spec.library == "transformers":
        import transformers

        cls = getattr(transformers, spec.class_name, None)
    else:  # e.g. ["stable_diffusion", "StableDiffusionSafetyChecker"]
        try:
            module = importlib.import_module(f"diffusers.pipelines.{spec.library}")
        except ImportError:
            module = None
        cls = getattr(module, spec.class_name, None) if module is not None else None
    if cls is None:
        raise EvalkitError(f"component {spec.name} names {spec.library}.{spec.class_name}, which this "
                           "diffusers/transformers install does not have",
                           "upgrade diffusers/transformers, or profile a pipeline whose classes they provide")
    return cls


def is_module_class(cls: type) -> bool:
    return isinstance(cls, type) and issubclass(cls, torch.nn.Module)


def build_component(spec: ComponentSpec, device: torch.device = META, dtype: torch.dtype | None = None
                    ) -> torch.nn.Module:
    """`spec`'s module on `device`: meta (no memory) unless a real device is asked for."""
    cls = component_class(spec)
    try:
        with warnings.catch_warnings(), torch.device(device):
            warnings.simplefilter("ignore")
            module = _instantiate(cls, spec.config)
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EvalkitError(f"could not build {spec.name} ({spec.class_name}) from its config: {first}",
                           "check the config.json (it must be one this diffusers/transformers version accepts)"
                           ) from e
    module.eval()
    if dtype is not None:
        module.to(dtype=dtype)
    return module


def _instantiate(cls: Any, config: dict[str, Any]) -> torch.nn.Module:
    from transformers import PreTrainedModel

    if issubclass(cls, PreTrainedModel):
        clean = {k: v for k, v in config.items() if not k.startswith("_")}
        return cls(cls.config_class.from_dict(clean))
    return cls.from_config(config)


def assert_meta(modules: dict[str, torch.nn.Module]) -> None:
    """Guard: config-only profiling must never hold real parameter storage."""
    for name, module in modules.items():
        real = [n for n, p in module.named_parameters() if not p.is_meta]
        if real:
            raise AssertionError(f"{name}.{real[0]} was materialised; config-only profiling must stay on meta")
