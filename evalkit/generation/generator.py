"""The generation engine: a checkpoint and prompt sets in, a reproducible image folder out.

Layout of one evaluated checkpoint (the "step folder"):
    OUT/<model>/<step>/generation.json         checkpoint, effective protocol, prompt sets, provenance
    OUT/<model>/<step>/manifest*.jsonl         one row per written image (append-only)
    OUT/<model>/<step>/images/<set>/<id>_<k>.png
A re-run trusts an image only if its bytes hash to what the manifest recorded for the same
seed and prompt text; everything else is (re)generated, deterministically.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_bytes, sha256_file
from evalkit.fileio.pngio import save_png
from evalkit.generation.adapters import latent_shape, native_resolution, resolution_multiple
from evalkit.generation.checkpoints import CheckpointRef
from evalkit.generation.compiling import CompiledDenoiser, CompilePlan, compile_failure_types
from evalkit.generation.embeddings import CHUNK, EmbeddingStore
from evalkit.generation.fitting import AutoRange, BatchFit, auto_range, chunked_decode
from evalkit.generation.loading import LoadedCheckpoint, PipelineLoader
from evalkit.generation.manifest import ManifestRow, append_manifest
from evalkit.generation.protocol import EffectiveProtocol, GenerationRequest, apply_scheduler, read_back
from evalkit.generation.record import GeneratedCheckpoint, GeneratedPromptSet, GenerationRecord
from evalkit.generation.seeding import initial_noise, sample_generator, sample_seed
from evalkit.options import DEFAULTS, RunOptions, shard_position
from evalkit.prompts.sets import PromptSet
from evalkit.runtime.memory import is_out_of_memory, release_cached_memory
from evalkit.runtime.provenance import provenance
from evalkit.stepdir import StepDir

MAX_BATCHES_IN_FLIGHT = 2


@dataclass(frozen=True)
class Sample:
    prompt_set: str
    prompt_index: int  # position in its set: decides the embedding chunk
    prompt_id: str
    text: str
    k: int
    seed: int
    file: str  # relative to the step folder

    @property
    def prompt_sha256(self) -> str:
        return sha256_bytes(self.text.encode("utf-8"))


@dataclass(frozen=True)
class GenerateOptions:
    """The output options of evalkit.options.RunOptions, parsed for the engine."""

    out: Path
    batch_size: int  # unused when auto_batch
    auto_batch: bool = False  # probe upward from fitting.AUTO_RANGES, halve on out-of-memory
    shard_index: int = 0
    shard_count: int = 1
    quiet: bool = DEFAULTS.quiet
    shard_block: int = DEFAULTS.score_batch_size  # a shard takes whole scoring batches (plan_samples)
    compile_plan: CompilePlan = CompilePlan()  # noqa: RUF009 (frozen); torch.compile of the denoiser (generation.compiling)

    @classmethod
    def of(cls, options: RunOptions) -> GenerateOptions:
        index, count = shard_position(options.shard)
        size = 1 if options.auto_batch else int(options.batch_size)
        return cls(options.out, size, options.auto_batch, index, count, options.quiet, options.score_batch_size,
                   CompilePlan(options.compile_denoiser))


@dataclass
class StepResult:
    ref: CheckpointRef
    step_dir: Path
    protocol: EffectiveProtocol
    planned: int
    reused: int
    generated: int
    seconds: float
    batch_size: int
    timings: dict[str, float] = field(default_factory=dict)
    checkpoint_fingerprint: str = ""

    @property
    def images_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else 0.0


def plan_samples(prompt_sets: Sequence[PromptSet], request: GenerationRequest,
                 shard_index: int = 0, shard_count: int = 1, block: int = 1) -> list[Sample]:
    """Every sample of every set, in prompt-set order; shard i of N takes every N-th block.

    Each set is cut into blocks of `block` samples from its start and the blocks are dealt out in
    turn: with `block` = the scoring batch size (what the evaluator passes), a shard's images are
    exactly whole batches of the ones one process would score — and, when the generation batch
    size divides it, generate — so a sharded run computes the same batches as one process and
    its run.json is the same to the bit (float results do depend on a batch's other members).
    """
    samples, dealt = [], 0
    for prompt_set in prompt_sets:
        in_set = [Sample(prompt_set=prompt_set.name, prompt_index=index, prompt_id=prompt.id, text=prompt.text,
                         k=k, seed=sample_seed(request.seed, prompt_set.name, prompt.id, k),
                         file=StepDir.image_file(prompt_set.name, prompt.id, k))
                  for index, prompt in enumerate(prompt_set.prompts) for k in range(request.images_per_prompt)]
        for start in range(0, len(in_set), block):
            if dealt % shard_count == shard_index:
                samples += in_set[start:start + block]
            dealt += 1
    return samples


def pending_samples(step_dir: StepDir, samples: Sequence[Sample]) -> list[Sample]:
    """Samples without a trustworthy image on disk."""
    rows = step_dir.read_manifest()
    todo = []
    for sample in samples:
        row = rows.get(sample.file)
        path = step_dir.path / sample.file
        trusted = (row is not None and row.seed == sample.seed and row.prompt_sha256 == sample.prompt_sha256
                   and path.is_file() and sha256_file(path) == row.sha256)
        if not trusted:
            todo.append(sample)
    return todo


def configure(loaded: LoadedCheckpoint, request: GenerationRequest) -> EffectiveProtocol:
    """Apply the request to the pipeline and read back what it will actually run."""
    pipe = loaded.pipe
    pipe.set_progress_bar_config(disable=True)  # evalkit shows one bar per checkpoint instead
    apply_scheduler(pipe, request.scheduler)
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None  # the study scores raw samples; a checker would black some out
    native = native_resolution(pipe, loaded.adapter)
    size = request.resolution or native
    multiple = resolution_multiple(pipe, loaded.adapter)
    if size % multiple:
        raise EvalkitError(f"resolution {size} is not a multiple of {multiple} for this pipeline",
                           f"choose a multiple of {multiple}")
    if request.guidance_scale > 1 and getattr(loaded.denoiser.config, "time_cond_proj_dim", None):
        raise EvalkitError("this denoiser is guidance-distilled (time_cond_proj_dim); it does not run CFG",
                           "pass --cfg 1 (and --scheduler native) for distilled models")
    return read_back(pipe, loaded.adapter.family, request, size, size, loaded.denoiser)


def render(loaded: LoadedCheckpoint, protocol: EffectiveProtocol, samples: Sequence[Sample],
           prompt_sets: dict[str, PromptSet], store: EmbeddingStore) -> torch.Tensor:
    """Float images in [0, 1], (B, 3, H, W) on the CPU, for one batch of samples."""
    pipe, adapter = loaded.pipe, loaded.adapter
    pairs = []
    for s in samples:
        chunk_start = (s.prompt_index // CHUNK) * CHUNK
        texts = tuple(p.text for p in prompt_sets[s.prompt_set].prompts[chunk_start:chunk_start + CHUNK])
        pairs.append((texts, s.prompt_index - chunk_start))
    positive = store.rows(loaded, pairs)
    negative = store.negative(loaded, protocol.negative_prompt)
    shape = latent_shape(pipe, adapter, protocol.height, protocol.width)
    generators = [sample_generator(s.seed) for s in samples]
    noise = torch.stack([initial_noise(g, shape) for g in generators])
    kwargs: dict[str, Any] = adapter.call_kwargs(positive, negative)
    if adapter.uses_eta:
        kwargs["eta"] = protocol.eta
    with torch.inference_mode():
        out = pipe(
            prompt=None,
            height=protocol.height,
            width=protocol.width,
            num_inference_steps=protocol.steps,
            guidance_scale=protocol.guidance_scale,
            latents=noise.to(device=pipe.device, dtype=loaded.denoiser.dtype),
            generator=generators,
            output_type="pt",
            return_dict=True,
            **kwargs,
        )
    _check_honoured(pipe, protocol)
    return out.images.float().cpu()


def _check_honoured(pipe: Any, protocol: EffectiveProtocol) -> None:
    ran_steps = getattr(pipe, "num_timesteps", protocol.steps)
    if ran_steps != protocol.steps:
        raise EvalkitError(f"the pipeline ran {ran_steps} steps instead of {protocol.steps}",
                           "report this as an evalkit bug with the pipeline class")
    cfg = getattr(pipe, "do_classifier_free_guidance", None)
    if cfg is not None and bool(cfg) != (protocol.guidance_scale > 1):
        raise EvalkitError(f"the pipeline {'ran' if cfg else 'skipped'} classifier-free guidance at "
                           f"scale {protocol.guidance_scale}", "choose a --cfg this pipeline honours")


# A batch whose PNGs are being written: futures of their hashes, the samples, the batch's seconds,
# its size, per sample whether the float output was finite, and whether a compiled denoiser made it.
_InFlight = tuple[list[Future[str]], list[Sample], float, int, list[bool], bool]


def quantize(images: torch.Tensor) -> np.ndarray:
    """[0,1] floats → uint8 HWC, rounding exactly as diffusers' numpy_to_pil does."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


class Generator:
    """Generates images for a sequence of checkpoints with one loader and embedding store."""

    def __init__(self, request: GenerationRequest, options: GenerateOptions,
                 allow_pickle: bool = DEFAULTS.allow_pickle) -> None:
        request.validate()
        self.request = request
        self.options = options
        self.device = request.torch_device()
        self.loader = PipelineLoader(self.device, request.torch_dtype(self.device), allow_pickle)
        self.store = EmbeddingStore()
        self.fits: dict[tuple[str, int, int, str], BatchFit] = {}  # one per shape of work, kept across checkpoints

    def run(self, refs: Sequence[CheckpointRef], prompt_sets: Sequence[PromptSet]) -> list[StepResult]:
        return [self.run_one(ref, prompt_sets) for ref in refs]

    def run_one(self, ref: CheckpointRef, prompt_sets: Sequence[PromptSet]) -> StepResult:
        t0 = time.perf_counter()
        loaded = self.loader.load(ref)
        return self.run_loaded(loaded, prompt_sets, time.perf_counter() - t0)

    def run_loaded(self, loaded: LoadedCheckpoint, prompt_sets: Sequence[PromptSet],
                   load_seconds: float = 0.0) -> StepResult:
        """Generate with a pipeline already loaded (by `run_one`, or by a training loop: evaluate())."""
        ref = loaded.ref
        t_load = time.perf_counter()
        protocol = configure(loaded, self.request)
        step_dir = StepDir.of(self.options.out, ref.name, ref.step_label)
        with step_dir.lock("generate", self.options.shard_index, self.options.shard_count):
            step_dir.remove_orphaned_temporaries()
            with step_dir.lock("record", wait=True):  # every shard of the step reads, extends and rewrites it
                _write_generation_record(step_dir, loaded, protocol, prompt_sets)
            planned = plan_samples(prompt_sets, self.request, self.options.shard_index, self.options.shard_count,
                                   self.options.shard_block)
            todo = pending_samples(step_dir, planned)
            t_plan = time.perf_counter()
            by_name = {s.name: s for s in prompt_sets}
            batch_size = self._write_images(loaded, protocol, step_dir, todo, by_name)
            t_end = time.perf_counter()
        return StepResult(ref, step_dir.path, protocol, len(planned), len(planned) - len(todo), len(todo),
                          t_end - t_plan, batch_size,
                          {"load": load_seconds, "plan": t_plan - t_load, "generate": t_end - t_plan},
                          loaded.fingerprint)

    def fit_for(self, protocol: EffectiveProtocol) -> BatchFit:
        """The batch-size state of this shape of work: the same object for every checkpoint of the run
        with this pipeline class, resolution and dtype, so what one found the next starts from."""
        key = (protocol.pipeline_class, protocol.height, protocol.width, str(self.loader.dtype))
        if key not in self.fits:
            size = self.options.batch_size
            limits = auto_range(self.device) if self.options.auto_batch else AutoRange(size, size)
            self.fits[key] = BatchFit(limits)
        return self.fits[key]

    def _write_images(self, loaded: LoadedCheckpoint, protocol: EffectiveProtocol, step_dir: StepDir,
                      todo: list[Sample], prompt_sets: dict[str, PromptSet]) -> int:
        fit = self.fit_for(protocol)
        if not todo:
            return fit.size
        manifest = step_dir.manifest(self.options.shard_index, self.options.shard_count)
        label = f"{loaded.ref.name}@{loaded.ref.step_label}"
        plan = self.options.compile_plan
        compiled = CompiledDenoiser(loaded.pipe, loaded.adapter.denoiser, plan, plan.wanted(self.device, len(todo)))
        with ThreadPoolExecutor(max_workers=2) as pool, _ProgressBar(label, len(todo), self.options.quiet) as advance, \
                compiled:
            in_flight: deque[_InFlight] = deque()
            position = 0
            while position < len(todo):
                batch = _one_set(todo[position:position + fit.size])
                started = time.perf_counter()
                try:
                    with chunked_decode(loaded.pipe.vae, self.device, fit):
                        images = render(loaded, protocol, batch, prompt_sets, self.store)
                except compile_failure_types() as e:  # before RuntimeError: dynamo's errors derive from it
                    if not compiled.active:
                        raise
                    compiled.fall_back(e)
                    continue
                except RuntimeError as e:  # torch.OutOfMemoryError is one; so are cuBLAS/cuDNN alloc failures
                    if not is_out_of_memory(e):
                        raise
                    self._back_off(fit, len(batch), e)
                    continue
                fit.succeeded(len(batch))
                finite = torch.isfinite(images).flatten(1).all(dim=1).tolist()
                pixels = quantize(images)
                elapsed = time.perf_counter() - started
                futures = [pool.submit(save_png, step_dir.path / s.file, pixels[i]) for i, s in enumerate(batch)]
                in_flight.append((futures, batch, elapsed, len(batch), finite, compiled.active))
                while len(in_flight) > MAX_BATCHES_IN_FLIGHT:
                    advance(_commit(manifest, in_flight.popleft()))
                position += len(batch)
            while in_flight:
                advance(_commit(manifest, in_flight.popleft()))
        return min(fit.size, fit.fitted) if fit.fitted else fit.size  # not a size probed but never run

    def _back_off(self, fit: BatchFit, size: int, error: BaseException) -> None:
        release_cached_memory(self.device)
        if not self.options.auto_batch or not fit.ran_out(size):
            raise EvalkitError(f"out of memory at batch size {size} ({_short(error)})",
                               "use --batch-size auto, a smaller --batch-size, or --dtype float16") from error


def _one_set(batch: list[Sample]) -> list[Sample]:
    """A batch never spans two prompt sets, so its members are the same however the plan is sharded."""
    return [s for s in batch if s.prompt_set == batch[0].prompt_set] if batch else batch


def _commit(manifest: Path, item: _InFlight) -> int:
    futures, batch, elapsed, size, finite, compiled = item
    rows = [ManifestRow(prompt_set=s.prompt_set, prompt_id=s.prompt_id, prompt_sha256=s.prompt_sha256, k=s.k,
                        seed=s.seed, file=s.file, sha256=f.result(), seconds=round(elapsed / size, 6),
                        batch_size=size, nonfinite=not ok, compiled=compiled)
            for f, s, ok in zip(futures, batch, finite, strict=True)]
    append_manifest(manifest, rows)
    return len(rows)


def _short(error: BaseException) -> str:
    return str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__


class _ProgressBar:
    """A rich progress bar with images/s and ETA, or nothing under --quiet."""

    def __init__(self, label: str, total: int, quiet: bool) -> None:
        self.label, self.total, self.quiet = label, total, quiet
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if self.quiet:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                             TextColumn("eta"), TimeRemainingColumn())
        self._bar.__enter__()
        task = self._bar.add_task(self.label, total=self.total, rate="")
        started = time.perf_counter()

        def advance(n: int) -> None:
            done = self._bar.tasks[0].completed + n
            rate = done / max(time.perf_counter() - started, 1e-9)
            self._bar.update(task, advance=n, rate=f"{rate:.2f} img/s")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def _write_generation_record(step_dir: StepDir, loaded: LoadedCheckpoint, protocol: EffectiveProtocol,
                             prompt_sets: Sequence[PromptSet]) -> None:
    """Record what this folder's images are; refuse to mix checkpoints or protocols in one folder."""
    checkpoint = GeneratedCheckpoint(loaded.ref.name, loaded.ref.step, loaded.fingerprint, protocol.pipeline_class,
                                     loaded.record)
    sets = {s.name: GeneratedPromptSet.of(s) for s in prompt_sets}
    if step_dir.is_generated():
        existing = step_dir.read_generation()
        if existing.checkpoint.fingerprint != loaded.fingerprint:
            raise EvalkitError(f"{step_dir.path} holds images of different weights (checkpoint fingerprint changed)",
                               "use another --out or --name, or delete that folder to regenerate")
        if existing.protocol_fingerprint != protocol.fingerprint():
            raise EvalkitError(f"{step_dir.path} holds images made with a different protocol",
                               "use another --out or --name, or delete that folder to regenerate")
        sets = {**existing.prompt_sets, **sets}  # a later run adds sets; one generated again replaces its entry
    step_dir.write_generation(GenerationRecord(checkpoint, protocol.as_record(), sets, provenance(loaded.pipe.device)))


