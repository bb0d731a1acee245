"""The generation protocol: what the user asks for, and what the pipeline actually runs.

The study's protocol is DDIM, CFG, empty negative prompt, one fixed seed and the checkpoint's
native resolution (the defaults of evalkit.options). A request is applied to a loaded pipeline,
then the settings are read back from the pipeline objects themselves; that read-back is what
gets recorded and fingerprinted, and a request the pipeline cannot honour is an error.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import diffusers
import torch

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_json
from evalkit.generation.seeding import SEED_SCHEME
from evalkit.options import AUTO, DEFAULTS, DTYPE_NAMES, NATIVE, SCHEDULER_CLASSES, RunOptions, check_fields, view

if TYPE_CHECKING:
    from diffusers.configuration_utils import ConfigMixin

SCHEDULERS: dict[str, type[ConfigMixin]] = {name: getattr(diffusers, cls) for name, cls in SCHEDULER_CLASSES.items()}
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


@dataclass(frozen=True)
class GenerationRequest:
    """The protocol options of evalkit.options.RunOptions, with what they mean for torch."""

    scheduler: str = DEFAULTS.scheduler  # a SCHEDULERS key, or NATIVE to keep the checkpoint's own
    steps: int = DEFAULTS.steps
    guidance_scale: float = DEFAULTS.guidance_scale
    seed: int = DEFAULTS.seed
    resolution: int = DEFAULTS.resolution  # 0: the checkpoint's native resolution
    dtype: str = DEFAULTS.dtype  # auto: bfloat16 on CUDA, float32 on CPU
    device: str = DEFAULTS.device
    negative_prompt: str = DEFAULTS.negative_prompt
    images_per_prompt: int = DEFAULTS.images_per_prompt
    eta: float = DEFAULTS.eta  # DDIM eta; 0 is deterministic DDIM as in the study

    @classmethod
    def of(cls, options: RunOptions) -> GenerationRequest:
        return view(cls, options)

    def validate(self) -> None:
        check_fields(self)

    def torch_device(self) -> torch.device:
        if self.device == AUTO:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except RuntimeError as e:
            raise EvalkitError(f"unknown device {self.device!r}", "use auto, cpu, cuda or cuda:N",
                               param="device") from e
        if device.type == "cuda" and not torch.cuda.is_available():
            raise EvalkitError(f"device {self.device} asked for, but CUDA is not available here", "use cpu or auto",
                               param="device")
        return device

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == AUTO:
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return DTYPES[self.dtype]


@dataclass(frozen=True)
class EffectiveProtocol:
    """The settings read back from a configured pipeline; recorded with every result."""

    pipeline_class: str
    family: str
    scheduler: str
    scheduler_config: dict[str, Any]
    steps: int
    guidance_scale: float
    eta: float
    negative_prompt: str
    seed: int
    seed_scheme: str
    height: int
    width: int
    dtype: str
    images_per_prompt: int
    device: str = field(default="", compare=False)  # recorded, not part of the fingerprint

    def fingerprint(self) -> str:
        record = asdict(self)
        record.pop("device")
        return sha256_json(record)

    def as_record(self) -> dict[str, Any]:
        return {**asdict(self), "fingerprint": self.fingerprint()}


def apply_scheduler(pipe: Any, name: str) -> None:
    """Swap in the requested scheduler built from the checkpoint's own scheduler config."""
    if name == NATIVE:
        return
    current = type(pipe.scheduler)
    wanted = SCHEDULERS[name]
    flow_now = current.__name__.startswith("FlowMatch")
    flow_wanted = wanted.__name__.startswith("FlowMatch")
    if flow_now != flow_wanted:
        kind = "a flow-matching" if flow_now else "a noise-prediction (eps/v)"
        raise EvalkitError(
            f"{type(pipe).__name__} is {kind} pipeline; scheduler {name!r} cannot run it",
            "pass --scheduler native (the checkpoint's own) or "
            + ("flow-euler" if flow_now else "ddim"),
        )
    pipe.scheduler = wanted.from_config(pipe.scheduler.config)


def read_back(pipe: Any, family: str, request: GenerationRequest, height: int, width: int,
              denoiser: torch.nn.Module) -> EffectiveProtocol:
    """Ask the pipeline objects what they will do, and refuse what they will not."""
    scheduler = pipe.scheduler
    scheduler.set_timesteps(request.steps)
    steps = len(scheduler.timesteps)
    if steps != request.steps:
        raise EvalkitError(f"{type(scheduler).__name__} runs {steps} steps when asked for {request.steps}",
                           "choose a step count this scheduler supports")
    if request.scheduler != NATIVE and type(scheduler) is not SCHEDULERS[request.scheduler]:
        raise EvalkitError(f"the pipeline kept {type(scheduler).__name__} instead of {request.scheduler}",
                           "report this as a bug in evalkit")
    uses_eta = "eta" in _step_parameters(scheduler)
    if request.eta and not uses_eta:
        raise EvalkitError(f"eta {request.eta} given, but {type(scheduler).__name__} has no eta parameter",
                           "leave eta at 0 for this scheduler", param="eta")
    return EffectiveProtocol(
        pipeline_class=type(pipe).__name__,
        family=family,
        scheduler=type(scheduler).__name__,
        scheduler_config=_jsonable(dict(scheduler.config)),
        steps=steps,
        guidance_scale=float(request.guidance_scale),
        eta=float(request.eta) if uses_eta else 0.0,
        negative_prompt=request.negative_prompt,
        seed=request.seed,
        seed_scheme=SEED_SCHEME,
        height=height,
        width=width,
        dtype=str(denoiser.dtype).removeprefix("torch."),
        images_per_prompt=request.images_per_prompt,
        device=str(denoiser.device),
    )


def _step_parameters(scheduler: Any) -> set[str]:
    import inspect

    return set(inspect.signature(scheduler.step).parameters)


def _jsonable(config: dict[str, Any]) -> dict[str, Any]:
    """The scheduler config as strict JSON values: anything JSON cannot hold becomes its string.

    DPM-Solver configs carry `lambda_min_clipped: -inf` (PixArt's default scheduler), which strict
    JSON cannot write; "-inf" keeps the setting readable instead of dropping it."""
    return {key: [_json_value(v) for v in value] if isinstance(value, (list, tuple)) else _json_value(value)
            for key, value in config.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
