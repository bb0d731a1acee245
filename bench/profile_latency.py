"""Latency per image and peak memory of the protocol, next to the counted cost, on this device.

`evalkit profile` counts parameters and MACs from configs; this script adds the measured side
for the same model: seconds per image under the protocol (DDIM 50, CFG 7.5) at batch 1 and
across a batch sweep (powers of two until out-of-memory or the cap), images/s, peak device
memory, and the achieved TFLOP/s that the counted FLOPs per image imply. It times evalkit's
own generation path (`evalkit.profile.latency.measure_latency`: configure + render with
per-sample noise, text encoding and VAE decode inside the time) after one untimed warm-up
per batch size, with the device synchronised before every clock read.

Models are built from code with random weights (no downloads): the public SD 1.5 / SD 2.x /
SDXL layouts and the scaling study's UNets (`evalkit.profile.configs`), created directly on
the device; or `--checkpoint PATH` times a real pipeline folder. Random weights cost the same
as trained ones: every step runs the same kernels on the same shapes.

Benchmarks report, they do not assert: the verdict is about the measurement itself (PASS when
repeats of every batch size agree within 10 %, so the numbers can be quoted) and the script
exits 0 either way; it exits non-zero only when nothing could be measured.

    python bench/profile_latency.py --preset sd2 --resolution 512            # GPU: the SD 2.x row
    python bench/profile_latency.py --preset tiny --device cpu --steps 4     # CPU smoke, seconds
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built from code or read from a local folder
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from evalkit.errors import EvalkitError
from evalkit.generation.checkpoints import ResolveOptions, resolve
from evalkit.generation.protocol import GenerationRequest
from evalkit.options import DEFAULTS
from evalkit.profile import ProtocolCost, preset, profile_spec, render_table, spec_from_ref, to_record
from evalkit.profile.configs import PRESETS
from evalkit.profile.latency import (
    DEFAULT_MAX_BATCH,
    LatencyReport,
    batch_sweep,
    load_checkpoint,
    measure_latency,
    random_weights_pipeline,
)

SCHEMA = "evalkit.bench.profile_latency/1"
STABLE_SPREAD = 0.10  # repeats of one batch size further apart than this (slowest/fastest) are not quotable


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="latency and peak memory of the evalkit protocol, next to counted MACs")
    p.add_argument("--preset", default="sd2", choices=(*PRESETS, "tiny"),
                   help="random-weight model of this layout (tiny: evalkit's test pipeline)")
    p.add_argument("--checkpoint", default="", help="time this pipeline folder instead of a preset")
    p.add_argument("--resolution", type=int, default=0, help="pixels; 0: the model's native size")
    p.add_argument("--steps", type=int, default=DEFAULTS.steps)
    p.add_argument("--cfg", type=float, default=DEFAULTS.guidance_scale)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                   help="auto: bfloat16 on CUDA, float32 on CPU")
    p.add_argument("--max-batch", type=int, default=0, help="sweep cap (default: 64 on CUDA, 4 on CPU)")
    p.add_argument("--batch-sizes", default="", help="explicit sizes, e.g. 1,8,32 (overrides the sweep)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per batch size")
    p.add_argument("--json", type=Path, default=None, help="also write the full report here")
    args = p.parse_args(argv)
    for name in ("steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    try:
        args.sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--batch-sizes {args.batch_sizes!r} is not a comma-separated list of numbers")
    if any(size < 1 for size in args.sizes):
        p.error("--batch-sizes must be positive")
    return args


def build(args: argparse.Namespace, request: GenerationRequest, work: Path) -> tuple[Any, Any, str]:
    """(spec for counting, loaded pipeline for timing, what the weights are)."""
    device = request.torch_device()
    dtype = request.torch_dtype(device)
    if args.checkpoint or args.preset == "tiny":
        folder = Path(args.checkpoint) if args.checkpoint else _tiny_folder(work)
        ref = resolve(str(folder), ResolveOptions(name=folder.name))[0]
        return spec_from_ref(ref), load_checkpoint(ref, device, dtype), "loaded" if args.checkpoint else "random (tiny)"
    spec = preset(args.preset)
    return spec, random_weights_pipeline(spec, device, dtype), "random (preset)"


def _tiny_folder(work: Path) -> Path:
    from evalkit.tiny.sd import build_tiny_sd

    folder = work / "tiny-sd"
    build_tiny_sd(seed=0, work=work / "tok").save_pretrained(str(folder))
    return folder


def spread(report: LatencyReport) -> dict[int, float]:
    return {p.batch_size: max(p.seconds) / min(p.seconds) - 1.0 for p in report.points}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    request = GenerationRequest(steps=args.steps, guidance_scale=args.cfg, dtype=args.dtype, device=args.device,
                                resolution=args.resolution)
    request.validate()
    device = request.torch_device()
    t0 = time.perf_counter()
    spec, loaded, weights = build(args, request, work)
    built_s = time.perf_counter() - t0
    profile = profile_spec(spec, [args.resolution] if args.resolution else [], ProtocolCost(args.steps, args.cfg))
    resolution = profile.compute[0].resolution
    request = replace(request, resolution=resolution)
    sizes = args.sizes or batch_sweep(args.max_batch or DEFAULT_MAX_BATCH.get(device.type, 4))
    print(f"profile_latency: {spec.name} on {device} ({str(request.torch_dtype(device)).removeprefix('torch.')}), "
          f"{resolution} px, {args.steps} steps, CFG {args.cfg:g}, batches {sizes}, repeats {args.repeats}, "
          f"threads {torch.get_num_threads()}; built in {built_s:.1f} s", flush=True)
    report = measure_latency(loaded, request, sizes, args.repeats, log=lambda line: print(line, flush=True))
    report.weights = weights
    profile.latency = report
    flops_per_image = profile.compute[0].per_image.flops
    achieved = {p.batch_size: flops_per_image / p.seconds_per_image / 1e12 for p in report.points}
    spreads = spread(report)
    stable = all(s <= STABLE_SPREAD for s in spreads.values()) and args.repeats > 1
    return {
        "schema": SCHEMA,
        "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "resolution": resolution, "python": platform.python_version(), "torch": torch.__version__},
        "profile": to_record(profile),
        "achieved_tflops": {str(k): round(v, 3) for k, v in achieved.items()},
        "repeat_spread": {str(k): round(v, 4) for k, v in spreads.items()},
        "verdict": "PASS" if stable else "FAIL",
        "_profile": profile,
    }


def summary(result: dict[str, Any]) -> str:
    profile = result["_profile"]
    lines = [render_table(profile), ""]
    lines.append("achieved TFLOP/s (counted FLOPs per image / measured seconds per image): "
                 + ", ".join(f"batch {k}: {v:.2f}" for k, v in result["achieved_tflops"].items()))
    latency = profile.latency
    first, best = latency.points[0], latency.best
    lines.append(f"batch {first.batch_size}: {first.seconds_per_image:.3f} s/image; best: batch {best.batch_size}, "
                 f"{best.images_per_second:.3f} images/s, {best.seconds_per_image:.3f} s/image")
    worst = max(result["repeat_spread"].values())
    if result["config"]["repeats"] < 2:
        why = "one repeat per batch size: spread unknown, use --repeats 3"
    else:
        why = f"largest spread between repeats {worst:.1%} (target <= {STABLE_SPREAD:.0%})"
    lines.append(f"{result['verdict']}: {why}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="evalkit-bench-") as tmp:
            result = run(args, Path(tmp))
    except EvalkitError as e:
        print(e.one_line(), file=sys.stderr)
        return 2
    print(summary(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {k: v for k, v in result.items() if not k.startswith("_")}
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
