"""Measured latency and peak memory of the protocol on the current device.

Times evalkit's own generation path (`generate.configure` + `generate.render`: DDIM from the
checkpoint's scheduler config, CFG, per-sample CPU noise, VAE decode, images back on the
host) so the number is what `evalkit generate` pays per image, minus PNG writing. Every timed
call gets a fresh embedding store, so text encoding of the batch's prompts (and of the empty
negative) is inside the time, as in a bare pipeline call.

Per batch size: one untimed warm-up call (lazy init, allocator pools, kernel selection), then
`repeats` timed calls; the device is synchronised before each clock read. Batch sizes are
swept in powers of two until out-of-memory or the cap. Peak memory: on CUDA
`torch.cuda.max_memory_allocated` over the timed calls (weights included); on CPU the peak
resident set size, with the kernel's high-water mark reset before each call
(/proc/self/clear_refs) where Linux allows it, else the process's lifetime peak.
"""

from __future__ import annotations

import gc
import resource
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evalkit.errors import EvalkitError
from evalkit.generation.loading import LoadedCheckpoint
from evalkit.runtime.devicetime import release_memory, synced_clock

PROMPT_SET = "coco-10k"  # real captions, so tokenised lengths look like the protocol's
DEFAULT_MAX_BATCH = {"cuda": 64, "cpu": 4}


@dataclass(frozen=True)
class LatencyPoint:
    batch_size: int
    seconds: tuple[float, ...]  # each timed call, whole batch
    peak_memory_bytes: int | None  # absolute peak during the timed calls
    baseline_memory_bytes: int | None  # allocated / resident just before them (weights and the rest)

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def seconds_per_image(self) -> float:
        return self.median_seconds / self.batch_size

    @property
    def images_per_second(self) -> float:
        return self.batch_size / self.median_seconds if self.median_seconds > 0 else 0.0

    def as_record(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "seconds": [round(s, 6) for s in self.seconds],
                "median_seconds": round(self.median_seconds, 6), "seconds_per_image": round(self.seconds_per_image, 6),
                "images_per_second": round(self.images_per_second, 4), "peak_memory_bytes": self.peak_memory_bytes,
                "baseline_memory_bytes": self.baseline_memory_bytes}


@dataclass
class LatencyReport:
    device: dict[str, Any]
    dtype: str
    resolution: int
    steps: int
    guidance_scale: float
    scheduler: str
    memory_method: str
    points: list[LatencyPoint] = field(default_factory=list)
    stopped: str = ""
    weights: str = ""  # "loaded" or "random (preset)": what the timed pipeline held

    @property
    def best(self) -> LatencyPoint | None:
        return max(self.points, key=lambda p: p.images_per_second, default=None)

    def point(self, batch_size: int) -> LatencyPoint | None:
        return next((p for p in self.points if p.batch_size == batch_size), None)

    def as_record(self) -> dict[str, Any]:
        best = self.best
        return {"device": self.device, "dtype": self.dtype, "resolution": self.resolution, "steps": self.steps,
                "guidance_scale": self.guidance_scale, "scheduler": self.scheduler,
                "memory_method": self.memory_method, "weights": self.weights, "stopped": self.stopped,
                "points": [p.as_record() for p in self.points],
                "batch1_seconds_per_image": round(self.points[0].seconds_per_image, 6)
                if self.points and self.points[0].batch_size == 1 else None,
                "best_batch_size": best.batch_size if best else None,
                "best_images_per_second": round(best.images_per_second, 4) if best else None}


def batch_sweep(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to max_batch (inclusive when a power of two)."""
    if max_batch < 1:
        raise EvalkitError(f"--max-batch must be at least 1 (got {max_batch})", "e.g. --max-batch 16")
    sizes, size = [], 1
    while size <= max_batch:
        sizes.append(size)
        size *= 2
    return sizes


def measure_latency(loaded: LoadedCheckpoint, request: Any, batch_sizes: Sequence[int], repeats: int = 1,
                    warmup: bool = True, log: Callable[[str], None] | None = None) -> LatencyReport:
    """Time the protocol at each batch size (see module docstring); stops at out-of-memory."""
    from evalkit.generation.embeddings import EmbeddingStore
    from evalkit.generation.generator import configure, plan_samples, render
    from evalkit.prompts.sets import load_prompt_set
    from evalkit.runtime.provenance import device_description

    if repeats < 1:
        raise EvalkitError(f"--repeats must be at least 1 (got {repeats})", "e.g. --repeats 3")
    protocol = configure(loaded, request)
    device = torch.device(loaded.pipe.device)
    meter = _PeakMemory(device)
    report = LatencyReport(device_description(device), protocol.dtype, protocol.height, protocol.steps,
                           protocol.guidance_scale, protocol.scheduler, meter.method)
    prompts = load_prompt_set(PROMPT_SET)
    for size in batch_sizes:
        subset = prompts.head(size)
        samples = plan_samples([subset], request)[:size]
        sets = {subset.name: subset}

        def once(samples: Sequence[Any] = samples, sets: dict[str, Any] = sets) -> None:
            render(loaded, protocol, samples, sets, EmbeddingStore())

        try:
            if warmup:
                once()
            seconds, peak, baseline = [], 0, None
            for _ in range(repeats):
                with meter:
                    start = synced_clock(device)
                    once()
                    seconds.append(synced_clock(device) - start)
                peak = max(peak, meter.peak or 0)
                baseline = meter.baseline if baseline is None else min(baseline, meter.baseline or 0)
        except torch.OutOfMemoryError:
            report.stopped = f"out of memory at batch {size}"
            break  # leaving the except block drops the traceback and with it the failed batch's tensors
        point = LatencyPoint(size, tuple(seconds), peak or None, baseline)
        report.points.append(point)
        if log:
            log(f"  batch {size:>3}: {point.median_seconds:8.3f} s/batch  {point.seconds_per_image:8.3f} s/image  "
                f"{point.images_per_second:7.3f} img/s")
    release_memory(device)
    if not report.stopped:
        report.stopped = f"batch cap {batch_sizes[-1]}" if batch_sizes else "no batch sizes"
    if not report.points:
        raise EvalkitError(f"out of memory at batch {batch_sizes[0]}; nothing could be timed",
                           "use a smaller --resolution or --dtype float16/bfloat16")
    return report






class _PeakMemory:
    """Peak memory over a block: CUDA allocator statistics, or the process's resident set."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: int | None = None
        self.baseline: int | None = None
        if device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated"
        elif _can_reset_rss_peak():
            self.method = "peak RSS (VmHWM, reset per call)"
        else:
            self.method = "peak RSS of the process (ru_maxrss, not resettable here)"

    def __enter__(self) -> _PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            self.baseline = _status_bytes("VmRSS")
            if _can_reset_rss_peak():
                Path("/proc/self/clear_refs").write_text("5")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _status_bytes("VmHWM")
            if peak is None:
                scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
            self.peak = peak


def _status_bytes(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _can_reset_rss_peak() -> bool:
    path = Path("/proc/self/clear_refs")
    try:
        with path.open("w") as handle:
            handle.write("5")
        return _status_bytes("VmHWM") is not None
    except OSError:
        return False


def random_weights_pipeline(spec: Any, device: torch.device, dtype: torch.dtype) -> LoadedCheckpoint:
    """A pipeline of `spec` (SD-family presets) with random weights on `device`, wrapped as a
    LoadedCheckpoint so it times through the same evalkit path as a loaded checkpoint.

    Modules are created directly on `device` (random init of billions of parameters is
    seconds on a GPU). Tokenizers are evalkit's byte-level CLIP tokenizer (its ids fit in the
    49408-token embedding); prompt lengths are padded to 77 either way, so cost is unaffected.
    """
    import diffusers
    from diffusers import DDIMScheduler
    from transformers import CLIPTokenizer

    from evalkit.generation.adapters import adapter_for
    from evalkit.generation.checkpoints import CheckpointRef, PipelineDir
    from evalkit.generation.tokenizer import write_clip_tokenizer
    from evalkit.profile.build import build_component
    from evalkit.profile.configs import OTHER, TEXT_ENCODER

    if spec.family not in ("sd", "sdxl") or not spec.pipeline_class:
        raise EvalkitError(f"random-weight timing covers SD/SDXL-shaped pipelines, not {spec.name} ({spec.family})",
                           "time a saved pipeline folder instead (evalkit profile PATH --latency)")
    adapter = adapter_for(spec.pipeline_class)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the caller's RNG is theirs
        torch.manual_seed(0)
        parts: dict[str, Any] = {c.name: build_component(c, device, dtype) for c in spec.components
                                 if c.role != OTHER}
    with tempfile.TemporaryDirectory(prefix="evalkit-profile-tok-") as tmp:
        for i, encoder in enumerate(c for c in spec.components if c.role == TEXT_ENCODER):
            folder = write_clip_tokenizer(Path(tmp) / str(i))
            parts[encoder.name.replace("text_encoder", "tokenizer")] = CLIPTokenizer.from_pretrained(str(folder))
    parts["scheduler"] = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    if spec.pipeline_class == "StableDiffusionPipeline":
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        parts.update(force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe = getattr(diffusers, spec.pipeline_class)(**parts)
    ref = CheckpointRef(PipelineDir(Path(f"<random {spec.name}>")), spec.name, None)
    tag = f"random-weights:{spec.name}"
    return LoadedCheckpoint(ref, pipe, adapter, tag, tag, {"kind": "random-weights", "preset": spec.name})


def load_checkpoint(ref: Any, device: torch.device, dtype: torch.dtype, allow_pickle: bool = False
                    ) -> LoadedCheckpoint:
    """Real weights through evalkit's own loader (the same pipeline `evalkit generate` runs)."""
    from evalkit.generation.loading import PipelineLoader

    return PipelineLoader(device, dtype, allow_pickle).load(ref)
