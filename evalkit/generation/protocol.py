"""The generation protocol: what the user asks for, and what the pipeline actually runs.

The study's protocol is DDIM 50 steps, CFG 7.5, empty negative prompt, one fixed seed, the
checkpoint's native resolution. A request is applied to a loaded pipeline, then the
settings are read back from the pipeline objects themselves; that read-back is what gets
recorded and fingerprinted, and a request the pipeline cannot honour is an error.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    PNDMScheduler,
)

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_json
from evalkit.generation.seeding import SEED_SCHEME

SCHEDULERS: dict[str, type] = {
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "pndm": PNDMScheduler,
    "euler": EulerDiscreteScheduler,
    "dpm++2m": DPMSolverMultistepScheduler,
    "flow-euler": FlowMatchEulerDiscreteScheduler,
}
NATIVE = "native"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class GenerationRequest:
    scheduler: str = "ddim"  # a SCHEDULERS key, or "native" to keep the checkpoint's own
    steps: int = 50
    guidance_scale: float = 7.5
    seed: int = 0
    resolution: int = 0  # 0: the checkpoint's native resolution
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on CPU
    device: str = "auto"
    negative_prompt: str = ""
    images_per_prompt: int = 1
    eta: float = 0.0  # DDIM eta; 0 is deterministic DDIM as in the study

    def validate(self) -> None:
        if self.scheduler != NATIVE and self.scheduler not in SCHEDULERS:
            names = ", ".join([NATIVE, *SCHEDULERS])
            raise EvalkitError(f"unknown scheduler {self.scheduler!r}", f"choose one of: {names}")
        if self.steps < 1:
            raise EvalkitError(f"--steps must be at least 1 (got {self.steps})", "the protocol uses 50")
        if self.guidance_scale < 0:
            raise EvalkitError(f"--cfg must be >= 0 (got {self.guidance_scale})", "the protocol uses 7.5")
        if self.resolution < 0 or self.resolution % 8:
            raise EvalkitError(f"--resolution must be a positive multiple of 8 (got {self.resolution})",
                               "omit it to use the checkpoint's native resolution")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise EvalkitError(f"unknown dtype {self.dtype!r}", "choose auto, float32, float16 or bfloat16")
        if self.images_per_prompt < 1:
            raise EvalkitError("--images-per-prompt must be at least 1", "the protocol uses 1")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except RuntimeError as e:
            raise EvalkitError(f"unknown device {self.device!r}", "use auto, cpu, cuda or cuda:N") from e
        if device.type == "cuda" and not torch.cuda.is_available():
            raise EvalkitError(f"--device {self.device} asked for, but CUDA is not available here",
                               "use --device cpu or auto")
        return device

    def torch_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
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
        raise EvalkitError(f"{type(scheduler).__name__} has no eta parameter", "drop --eta")
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
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        elif isinstance(value, (list, tuple)):
            out[key] = [v if isinstance(v, (str, int, float, bool)) or v is None else str(v) for v in value]
        else:
            out[key] = str(value)
    return out
