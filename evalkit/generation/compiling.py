"""torch.compile of the denoiser, on only when it pays for the run's size.

The denoiser runs steps × 2 (classifier-free guidance) forwards per batch and is nearly all of a
checkpoint's generation time, so it is the one module worth compiling. Compiling costs a fixed time
and pays back per image: on the tiny CPU UNet, 92 s on a cold cache and 9 s once inductor's on-disk
FX graph cache holds the graph (the next process, and the next checkpoint of the same architecture,
since the weights are graph inputs), for 1.42× on every later batch (bench/generate_overhead.py
measures both in the same run: `--loop compile`, and run.py's `levers[]` row `torch_compile`).
`--compile auto` therefore compiles only on CUDA and only for a checkpoint with at least
`COMPILE_MIN_IMAGES` images left to make; `on` compiles anywhere, `off` never does.

Compiled and eager outputs differ by float rounding only (fused kernels reorder sums): the images
stay within one uint8 level, as across batch sizes, and each manifest row records whether its
image came from a compiled denoiser.

The compiled module stands in for the pipeline's denoiser during one checkpoint's generation and
the pipeline's own module is put back after, so a pipeline that was passed in is left as it came.
Compilation happens at the first forward, so a failure shows there: under `auto` the batch is run
again eagerly after a one-line warning; under `on` it is one error line naming the way out.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from evalkit.errors import EvalkitError
from evalkit.options import AUTO, DEFAULTS

# Where auto starts compiling. An estimate until a GPU run of bench/generate_overhead.py measures
# the break-even (its `compile.breakeven_images`): a cold compile of an SD2-sized UNet is of the
# order of a minute on a GPU, and a 10-30 % saving per image repays it after a few thousand
# images, i.e. on a full checkpoint (14,081) but not on a smoke run.
COMPILE_MIN_IMAGES = 2048


def compile_failure_types() -> tuple[type[BaseException], ...]:
    """The errors that mean "torch.compile could not compile this", as opposed to a failure of the
    computation itself (out of memory, a bad input), which the eager denoiser would raise too."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import InductorError

    return TorchDynamoException, InductorError


@dataclass(frozen=True)
class CompilePlan:
    """`--compile` and the compiler it uses (inductor; a test may pass another backend)."""

    mode: str = DEFAULTS.compile_denoiser  # one of options.COMPILE_CHOICES (its rule checks)
    backend: str | Callable[..., Any] = "inductor"
    auto_devices: tuple[str, ...] = ("cuda",)  # where auto compiles: a GPU, where the saving is measured to pay
    auto_min_images: int = COMPILE_MIN_IMAGES

    def wanted(self, device: torch.device, images: int) -> bool:
        if self.mode == AUTO:
            return device.type in self.auto_devices and images >= self.auto_min_images
        return self.mode == "on"


class CompiledDenoiser:
    """The pipeline's denoiser swapped for its compiled module while the block runs, when `wanted`
    (`active` says whether it is in place), with the way back to eager when compiling fails."""

    def __init__(self, pipe: Any, attribute: str, plan: CompilePlan, wanted: bool) -> None:
        self.pipe, self.attribute, self.plan, self.wanted = pipe, attribute, plan, wanted
        self.original = getattr(pipe, attribute)
        self.active = False

    def __enter__(self) -> CompiledDenoiser:
        if self.wanted:
            setattr(self.pipe, self.attribute, torch.compile(self.original, backend=self.plan.backend))
            self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def fall_back(self, error: BaseException) -> None:
        """After a compile failure: eager from here on under auto; one line under on."""
        self._restore()
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        if self.plan.mode == "on":
            raise EvalkitError(f"torch.compile of the denoiser failed ({first})",
                               "use --compile off (or auto, which falls back to eager)") from error
        warnings.warn(f"torch.compile of the denoiser failed ({first}); generating eagerly", stacklevel=2)

    def _restore(self) -> None:
        if self.active:
            setattr(self.pipe, self.attribute, self.original)
            self.active = False
