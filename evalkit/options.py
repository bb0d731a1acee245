"""Every generation and scoring option, declared once.

A field of `RunOptions` is one option: its name (the `evaluate()` keyword), type, default, help
text, rule and CLI flag. `evalkit generate/run/score/profile` build their click options from these
fields (evalkit.cli.options) and `evaluate()` takes them as keywords (a test holds the two to the
fields), so an option cannot drift between the command line and Python, and adding one is adding
a field here. The engine's own option objects are views of one group of fields each and take
their defaults from here: GenerationRequest (protocol), ResolveOptions (source), GenerateOptions
(output).

A broken rule names the parameter (`limit must be >= 0`), since a Python caller never typed a
flag; the CLI re-spells it as the flag when it prints the error (EvalkitError.param).

Nothing here imports torch: the CLI builds its options from this module before it knows whether
it will generate anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from evalkit.errors import EvalkitError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from evalkit.prompts.sets import PromptSet

AUTO = "auto"
NATIVE = "native"  # the scheduler the checkpoint ships with
# Scheduler names the protocol accepts besides NATIVE, and the diffusers class each one builds.
SCHEDULER_CLASSES = MappingProxyType({
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "dpm++2m": "DPMSolverMultistepScheduler",
    "flow-euler": "FlowMatchEulerDiscreteScheduler",
})
DTYPE_NAMES = ("float32", "float16", "bfloat16")  # torch dtypes by name; AUTO picks one per device
COMPILE_CHOICES = (AUTO, "on", "off")  # --compile; what auto decides: evalkit.generation.compiling
_OUT = Path("evalkit-out")

Group = Literal["source", "protocol", "output", "prompts", "scoring", "compute", "scale"]
Rule = Callable[[str, Any, Any], None]  # (name, value, default): raises EvalkitError when the value is unusable
T = TypeVar("T", bound="DataclassInstance")


@dataclass(frozen=True)
class OptionSpec:
    """What RunOptions declares about one field besides its name, type and default."""

    group: Group  # which engine object it configures (and so which view holds it)
    help: str
    flag: str  # the CLI's spelling; "" for --the-field-name
    rule: Rule
    show_default: bool  # in --help; off where the help text already says what the default means
    cli_only: str  # why evaluate() does not take it; "" when it does
    in_process: Any  # evaluate()'s default: the CLI's, unless a training loop needs another


def _free(name: str, value: Any, default: Any) -> None:
    """Any value of the field's type is usable."""


_CLI_DEFAULT: Any = object()


def option(default: Any, group: Group, help: str, *, flag: str = "", rule: Rule = _free, show_default: bool = False,
           cli_only: str = "", in_process: Any = _CLI_DEFAULT) -> Any:
    """A RunOptions field: the default and everything the CLI and evaluate() need to offer it."""
    spec = OptionSpec(group, help, flag, rule, show_default, cli_only,
                      default if in_process is _CLI_DEFAULT else in_process)
    return field(default=default, metadata={"option": spec})


# -- rules -----------------------------------------------------------------------------------------
def _at_least(low: int, hint: str) -> Rule:
    def rule(name: str, value: Any, default: Any) -> None:
        if value < low:
            raise EvalkitError(f"{name} must be at least {low} (got {value})", hint.format(default=default),
                               param=name)

    return rule


def _not_negative(hint: str) -> Rule:
    def rule(name: str, value: Any, default: Any) -> None:
        if value < 0:
            raise EvalkitError(f"{name} must be >= 0 (got {value})", hint.format(default=default), param=name)

    return rule


def _guidance_scale(name: str, value: float, default: Any) -> None:
    if not math.isfinite(value):
        raise EvalkitError(f"{name} must be a finite number (got {value})", f"the protocol uses {default}", param=name)
    _not_negative("the protocol uses {default}")(name, value, default)


def _scheduler(name: str, value: str, default: Any) -> None:
    if value != NATIVE and value not in SCHEDULER_CLASSES:
        raise EvalkitError(f"unknown {name} {value!r}", f"choose one of: {', '.join([NATIVE, *SCHEDULER_CLASSES])}",
                           param=name)


def _dtype(name: str, value: str, default: Any) -> None:
    if value != AUTO and value not in DTYPE_NAMES:
        raise EvalkitError(f"unknown {name} {value!r}", f"choose one of: {', '.join([AUTO, *DTYPE_NAMES])}",
                           param=name)


def _resolution(name: str, value: int, default: Any) -> None:
    if value < 0 or value % 8:
        raise EvalkitError(f"{name} must be a positive multiple of 8 (got {value})",
                           "omit it to use the checkpoint's native resolution", param=name)


def _batch_size(name: str, value: int | str, default: Any) -> None:
    if isinstance(value, str):
        if value != AUTO:
            raise EvalkitError(f"{name} {value!r} is neither a number nor {AUTO!r}", "e.g. 8, or auto", param=name)
    elif value < 1:
        raise EvalkitError(f"{name} must be at least 1 (got {value})", "or use auto", param=name)


def _compile(name: str, value: str, default: Any) -> None:
    if value not in COMPILE_CHOICES:
        raise EvalkitError(f"{name} {value!r} is not one of {', '.join(COMPILE_CHOICES)}",
                           "auto compiles on a GPU when a checkpoint is large enough to repay it", param=name)


def _shard(name: str, value: str, default: Any) -> None:
    if value:
        shard_position(value)


def shard_position(text: str) -> tuple[int, int]:
    """'i/N' as (i, N); '' is the whole job, (0, 1)."""
    if not text:
        return 0, 1
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError as e:
        raise EvalkitError(f"shard {text!r} is not of the form i/N", "e.g. 0/4 for the first of 4",
                           param="shard") from e
    if count < 1 or not 0 <= index < count:
        raise EvalkitError(f"shard {text!r} is out of range", "i must satisfy 0 <= i < N", param="shard")
    return index, count


SPLITS = ("auto", "checkpoints", "samples")


def _split(name: str, value: str, default: Any) -> None:
    if value not in SPLITS:
        raise EvalkitError(f"{name} {value!r} is not one of {', '.join(SPLITS)}", f"e.g. {default}", param=name)


def _positive(name: str, value: float, default: Any) -> None:
    if not 0 < value < float("inf"):  # NaN fails both comparisons
        raise EvalkitError(f"{name} must be a positive number of seconds (got {value})", f"e.g. {default}",
                           param=name)


@dataclass(frozen=True)
class RunOptions:
    """How to generate and score: everything but which checkpoint, metrics and prompt sets.

    Field order is the order of the CLI's --help.
    """

    out: Path = option(  # noqa: RUF009 (a Path is immutable)
        _OUT, "output", "Results folder: OUT/<model>/<step>/ per checkpoint.", show_default=True)
    base: str = option("", "source", "Pipeline folder or hub id for single files and training folders.")
    revision: str = option("main", "source", "Hub revision (branch, tag or commit).", show_default=True)
    ema: bool = option(False, "source", "Evaluate checkpoint-N/unet_ema instead of the non-EMA weights.")
    name: str = option("", "source", "Model name for the output folder (default: from the source).")
    step: int = option(-1, "source", "Training step to file a single checkpoint under.",
                       cli_only="evaluate() has its own step=, which also picks checkpoint-N of a training folder")
    steps: int = option(50, "protocol", "Denoising steps.", rule=_at_least(1, "the protocol uses {default}"),
                        show_default=True)
    guidance_scale: float = option(7.5, "protocol", "Classifier-free guidance scale.", flag="--cfg",
                                   rule=_guidance_scale, show_default=True)
    seed: int = option(0, "protocol", "Global seed.", show_default=True)
    scheduler: str = option("ddim", "protocol", f"{', '.join(SCHEDULER_CLASSES)} (built from the checkpoint's "
                            "scheduler config), or native (its own).", rule=_scheduler, show_default=True)
    dtype: str = option(AUTO, "protocol", f"auto (bf16 on CUDA, fp32 on CPU), {', '.join(DTYPE_NAMES)}.",
                        rule=_dtype, show_default=True)
    device: str = option(AUTO, "protocol", "auto (CUDA when available), cpu, cuda or cuda:N.", show_default=True)
    batch_size: int | str = option(AUTO, "output", "A number, or auto (backs off on OOM).", rule=_batch_size,
                                   show_default=True, in_process=8)  # in a training loop the GPU is shared: no probing
    compile_denoiser: str = option(AUTO, "output", "torch.compile the denoiser: auto (on CUDA, for a checkpoint "
                                   "with a few thousand images to make), on or off. Results agree with eager "
                                   "to float rounding.", flag="--compile", rule=_compile, show_default=True,
                                   in_process="off")  # a training loop's process and module are not ours to compile
    resolution: int = option(0, "protocol", "Image size (default: the checkpoint's native one).", rule=_resolution)
    negative_prompt: str = option("", "protocol", "Negative prompt (the protocol uses none).")
    images_per_prompt: int = option(1, "protocol", "Samples per prompt, each with its own seed.",
                                    rule=_at_least(1, "the protocol uses {default}"), show_default=True)
    eta: float = option(0.0, "protocol", "DDIM eta (0: deterministic, as in the study); only for schedulers "
                        "that take one.", show_default=True)
    limit: int = option(0, "prompts", "Only the first N prompts of each set (smoke runs).",
                        rule=_not_negative("0 means all prompts"))
    subset: str = option("", "prompts", "A named prompt subset (prompts/subsets/), e.g. smoke for CI; its results "
                         "compare only with runs on the same subset.")
    shard: str = option("", "output", "i/N: this process takes every N-th sample starting at i (SLURM arrays; "
                        "`evalkit merge` combines the shards). Under torchrun each rank takes its own.",
                        rule=_shard, cli_only="a shard is one of several processes and writes no run.json; "
                        "evaluate() returns a checkpoint's results")
    rendezvous_timeout: float = option(300.0, "output", "Under torchrun/accelerate: seconds to wait for every "
                                       "process WORLD_SIZE announces to join.", rule=_positive, show_default=True,
                                       cli_only="evaluate() runs in its caller's process")
    allow_pickle: bool = option(False, "source", "Allow pickled weights, loaded with weights_only=True.")
    quiet: bool = option(False, "output", "No progress bar (for CI logs).", in_process=True)  # a training loop logs
    score_batch_size: int = option(32, "scoring", "Images per metric batch.", rule=_at_least(1, "e.g. {default}"),
                                   show_default=True)
    split: str = option("auto", "scale", "With several processes on a training folder: give each one whole "
                        "checkpoints, or a share of every checkpoint's samples; auto picks the faster.",
                        rule=_split, show_default=True, cli_only="evaluate() evaluates one checkpoint")
    flops_per_step: float = option(0.0, "compute", "Training FLOPs per step: adds a compute axis.")
    train_batch_size: int = option(0, "compute", "Training batch size: FLOPs per step = 3 x 2 x denoiser MACs x "
                                   "batch (evalkit.profile).")

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def auto_batch(self) -> bool:
        return self.batch_size == AUTO

    def select(self, prompt_sets: Sequence[PromptSet]) -> list[PromptSet]:
        """The prompts to run: the subset's prompts of each set, then the first `limit` of those."""
        sets = list(prompt_sets)
        if self.subset:
            from evalkit.prompts.subsets import apply_subset

            sets = apply_subset(sets, self.subset)
        return [s.head(self.limit) for s in sets] if self.limit else sets


OPTION_FIELDS = MappingProxyType({f.name: f for f in fields(RunOptions)})


def spec_of(name: str) -> OptionSpec:
    spec: OptionSpec = OPTION_FIELDS[name].metadata["option"]
    return spec


def flag_of(name: str) -> str:
    return spec_of(name).flag or "--" + name.replace("_", "-")


def names_in(*groups: Group) -> tuple[str, ...]:
    """The options of these groups, in declaration order."""
    return tuple(name for name in OPTION_FIELDS if spec_of(name).group in groups)


def check(name: str, value: Any) -> None:
    """Raise the EvalkitError of option `name`'s rule when `value` breaks it."""
    spec_of(name).rule(name, value, OPTION_FIELDS[name].default)


def check_fields(values: DataclassInstance) -> None:
    """Check every field of a dataclass whose fields are options: RunOptions or one of its views."""
    for f in fields(values):
        check(f.name, getattr(values, f.name))


def view(cls: type[T], options: RunOptions) -> T:
    """An engine object whose fields are options (GenerationRequest, ResolveOptions), filled from `options`."""
    return cls(**{f.name: getattr(options, f.name) for f in fields(cls)})


DEFAULTS = RunOptions()
IN_PROCESS = RunOptions(**{name: spec_of(name).in_process for name in OPTION_FIELDS})  # evaluate()'s defaults
