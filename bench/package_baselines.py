"""ImageReward and HPSv2 through evalkit against their reference packages' own scoring calls, one run.

Issue 10 asks that evalkit score ImageReward and HPSv2 at least 10x the images/s of the packages
a user would otherwise call (image-reward 1.5, hpsv2 1.2.0). Those packages cannot be installed
next to evalkit, so their side runs in `.venv-ref` through the parity scripts
(parity/ref_imagereward.py, parity/ref_hpsv2.py) with "time_repeats" in the spec. Both sides
score the same images with the same weights — the tiny random checkpoints the parity tests use
(evalkit/tiny/reference.py), in each package's own layout on its side and converted on evalkit's
— and the scores are compared, so a speedup is only reported next to the evidence that the two
sides computed the same thing.

* evalkit: ``score_step(step_dir, [metric], device, batch_size=B)`` on a fresh, unscored copy of a
  step folder of tiny-generator output each repeat (read, hash-check, prepare, batched scoring,
  store, aggregate: the whole call is timed); the model is loaded once before, not timed.
* package: in .venv-ref, the model loaded once (not timed), then per prompt the call its README
  shows: ImageReward ``model.score(prompt, [paths])`` under ``torch.no_grad``; hpsv2
  ``hpsv2.img_score.score([paths], prompt, cp=checkpoint)`` (which reloads the checkpoint file
  on every call: that is the package's own cost, so it is timed with it).

Each side warms up once untimed, then runs ``--repeats`` timed passes over all images; medians
are reported, speedup = package seconds ÷ evalkit seconds. The sides run one after the other
(the package in its own process), not interleaved, so a busy machine shows as spread. The
package side always runs on the CPU in float32 (the parity scripts pin it, so the scores are
comparable at 1e-5); full-size models on a GPU are not built here yet, and an evalkit side on
another device than cpu is recorded but is not a like-for-like comparison. Benchmarks report, they do not
assert: the exit status is 0 whatever the verdict; only when nothing can be measured (no
reference venv, --device cuda without CUDA) is it non-zero.

    python bench/package_baselines.py                              # tiny models, CPU, ~1 min
    python bench/package_baselines.py --repeats 5 --json out/bench/packages.json
"""

from __future__ import annotations

import os

# Everything is built from code; nothing may reach the hub (set before transformers imports).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from harness import fresh_copy, items_of, run_and_report, versions  # bench/harness.py (scripts run from bench/)

from evalkit.errors import EvalkitError
from evalkit.metrics.api import ImageItem, Metric
from evalkit.runtime.devicetime import release_memory, synced_clock
from evalkit.runtime.quiet import quiet_loading

SCHEMA = "evalkit.bench.package_baselines/1"
METRICS = ("imagereward", "hpsv2")
TARGET_SPEEDUP = 10.0  # issue 10: >= 10x the images/s of the package's own scoring call
PARITY_TOL = 1e-4  # the parity tests hold 1e-5 on these models; a larger gap means different computations
NOISY_SPREAD = 0.15  # repeats of one side further apart than this: the machine was busy
GENERATION_STEPS = 2  # the images only have to exist; their content does not change scoring cost
REPO = Path(__file__).resolve().parents[1]
REF_PYTHON = REPO / ".venv-ref" / "bin" / "python"
# Which prompt set each metric's card scores (as the shipped cards: ImageReward COCO, HPSv2 TIFA).
PROMPT_SETS = {"imagereward": "coco-10k", "hpsv2": "tifa-v1.0"}
SCRIPTS = {"imagereward": "ref_imagereward", "hpsv2": "ref_hpsv2"}


class Skip(Exception):
    """A metric that cannot be measured here; the reason is printed and recorded."""


# ---------------------------------------------------------------------------------------------
# Models: the parity tests' tiny checkpoints, a card for evalkit and a spec for the package


@dataclass(frozen=True)
class Pair:
    """One metric's two sides on the same weights: evalkit's card and the reference script's spec."""

    card: Path
    spec: dict[str, Any]  # without "cases"
    model: str


def build_pair(metric: str, models: Path) -> Pair:
    from evalkit.tiny.clip import write_card
    from evalkit.tiny.hpsv2 import write_tiny_card
    from evalkit.tiny.reference import (
        HPS_REFERENCE_VERSION,
        hpsv2_reference_checkpoint,
        hpsv2_reference_spec,
        imagereward_reference,
    )

    if metric == "imagereward":
        built = imagereward_reference(models / "imagereward", seed=0)
        card = write_card(models / "imagereward.yaml", "imagereward-package-bench", "imagereward",
                          PROMPT_SETS[metric], {"imagereward": built.converted})
        return Pair(card, built.spec, "tiny random ImageReward (parity shapes)")
    checkpoint = hpsv2_reference_checkpoint(models / "hpsv2", seed=0)
    card = write_tiny_card(models / "hpsv2.yaml", "hpsv2-package-bench", checkpoint.parent,
                           version=HPS_REFERENCE_VERSION, antialias=False, prompt_set=PROMPT_SETS[metric])
    return Pair(card, hpsv2_reference_spec(checkpoint, antialias=False), "tiny random HPS (parity shapes)")


# ---------------------------------------------------------------------------------------------
# Images


def generate_step(work: Path, prompts: int, images_per_prompt: int, resolution: int, device: str) -> Path:
    """One step folder of real generator output (tiny SD, few steps) for both metrics' prompt sets."""
    from evalkit.generation.checkpoints import ResolveOptions, resolve
    from evalkit.generation.generator import GenerateOptions, Generator
    from evalkit.generation.protocol import GenerationRequest
    from evalkit.prompts.sets import load_prompt_set
    from evalkit.tiny.sd import build_tiny_sd

    sd_dir = work / "tiny-sd"
    build_tiny_sd(seed=0, resolution=resolution, work=work / "tiny-sd-tokenizer").save_pretrained(str(sd_dir))
    ref = resolve(str(sd_dir), ResolveOptions())[0]
    sets = [load_prompt_set(name).head(prompts) for name in dict.fromkeys(PROMPT_SETS.values())]
    request = GenerationRequest(steps=GENERATION_STEPS, images_per_prompt=images_per_prompt, resolution=resolution,
                                device=device)
    return Generator(request, GenerateOptions(out=work / "generated", batch_size=16, quiet=True)).run_one(
        ref, sets).step_dir


def cases_of(items: Sequence[ImageItem]) -> tuple[list[dict[str, Any]], list[list[ImageItem]]]:
    """The reference script's cases, one per prompt with that prompt's image paths (the package's
    per-prompt call), and the items behind each path (to pair the scores up)."""
    by_prompt: dict[str, list[ImageItem]] = {}
    for item in items:
        by_prompt.setdefault(item.prompt.id, []).append(item)
    groups = list(by_prompt.values())
    return [{"prompt": g[0].prompt.text, "images": [str(it.path) for it in g]} for g in groups], groups


# ---------------------------------------------------------------------------------------------
# Timed sides


def time_evalkit(metric: Metric, step_dir: Path, runs: Path, items: list[ImageItem], batch_size: int,
                 repeats: int, device: torch.device) -> tuple[list[float], dict[tuple[str, str], float]]:
    """One untimed warm-up call, then `repeats` timed `score_step` calls, each on an unscored copy
    (made before any clock starts); returns the seconds and the last call's per-image values."""
    from evalkit.scoring.engine import score_step
    from evalkit.scoring.store import ScoreStore

    pending = [fresh_copy(step_dir, runs / f"evalkit-{i}") for i in range(repeats + 1)]
    seconds: list[float] = []
    last: tuple[Path, Any] | None = None
    for i in range(repeats + 1):
        folder = pending.pop()
        t0 = synced_clock(device)
        result = score_step(folder, [metric], device, batch_size=batch_size, quiet=True)[0]
        elapsed = synced_clock(device) - t0
        if result.scored != len(items):
            raise RuntimeError(f"evalkit scored {result.scored} of {len(items)} images; the copy was not fresh")
        if i:  # the first call is the warm-up
            seconds.append(elapsed)
            print(f"  evalkit repeat {i}/{repeats}: {elapsed:.3f} s", flush=True)
        last = (folder, result)
    assert last is not None
    folder, result = last
    stored = ScoreStore(folder, result.metric, result.fingerprint).scored()
    return seconds, {key: float(records[0]["value"]) for key, records in stored.items()}


def time_package(metric: str, spec: dict[str, Any], ref_python: Path, tmp: Path, timeout: int) -> dict[str, Any]:
    """The reference script in .venv-ref with "time_repeats": its OUT.json (timing + parity outputs)."""
    tmp.mkdir(parents=True, exist_ok=True)
    script = SCRIPTS[metric]
    spec_file, out_file = tmp / f"{script}.spec.json", tmp / f"{script}.out.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)  # the reference venv must not import this checkout's packages
    try:
        proc = subprocess.run([str(ref_python), str(REPO / "parity" / f"{script}.py"), str(spec_file), str(out_file)],
                              env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp)
    except subprocess.TimeoutExpired as e:
        raise Skip(f"{script} in the reference venv timed out after {timeout} s") from e
    if proc.returncode != 0 or not out_file.is_file():
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise Skip(f"{script} failed in the reference venv (exit {proc.returncode}): {tail[0]}")
    out: dict[str, Any] = json.loads(out_file.read_text(encoding="utf-8"))
    if "timing" not in out:
        raise Skip(f"{script} wrote no timing: the reference script predates time_repeats")
    return out


def measure(metric_name: str, pair: Pair, step_dir: Path, work: Path, args: argparse.Namespace,
            device: torch.device) -> dict[str, Any]:
    from evalkit.metrics.registry import create

    metric = create(str(pair.card))
    t0 = time.perf_counter()
    metric.setup(device)  # loading is not scoring: neither side pays for it
    print(f"{metric_name}: {pair.model}; evalkit loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    items = items_of(step_dir, metric)
    cases, groups = cases_of(items)
    runs = work / "runs" / metric_name
    try:
        ours, values = time_evalkit(metric, step_dir, runs, items, args.batch_size, args.repeats, device)
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    print(f"  package ({SCRIPTS[metric_name]} in {args.ref_python.parent.parent.name}): warm-up + "
          f"{args.repeats} timed passes", flush=True)
    ref = time_package(metric_name, {**pair.spec, "cases": cases, "time_repeats": args.repeats}, args.ref_python,
                       work / "ref" / metric_name, args.ref_timeout)
    timing = ref["timing"]
    base = [float(s) for s in timing["seconds"]]
    print("  package repeats: " + ", ".join(f"{s:.3f} s" for s in base), flush=True)
    diffs = [abs(values[(it.file, it.sha256)] - score)
             for group, scores in zip(groups, timing["scores"], strict=True)
             for it, score in zip(group, scores, strict=True)]
    n = len(items)
    o, b = statistics.median(ours), statistics.median(base)
    return {
        "metric": metric_name, "model": pair.model, "images": n, "prompts": len(cases),
        "package_call": timing["call"],
        "runs": {"evalkit": ours, "package": base},
        "summary": {"evalkit_seconds_median": o, "package_seconds_median": b,
                    "evalkit_images_per_second": n / o, "package_images_per_second": n / b,
                    "speedup": b / o,
                    "spread": max(max(s) / min(s) - 1.0 for s in (ours, base))},
        "parity": {"max_abs_diff": max(diffs), "images": len(diffs), "tolerance": PARITY_TOL},
        "package": {"warmup_seconds": timing["warmup_seconds"], "torch_threads": timing["torch_threads"],
                    "versions": ref.get("versions", {})},
    }


# ---------------------------------------------------------------------------------------------
# Report


def table(report: dict[str, Any]) -> str:
    lines = [f"{'metric':<13}{'images':>7}{'evalkit':>14}{'package':>14}{'speedup':>10}  parity (evalkit vs package)",
             f"{'':<13}{'':>7}{'(median)':>14}{'(median)':>14}"]
    for row in report["rows"]:
        s, p = row["summary"], row["parity"]
        lines.append(f"{row['metric']:<13}{row['images']:>7}{s['evalkit_images_per_second']:>8.1f} img/s"
                     f"{s['package_images_per_second']:>8.1f} img/s{s['speedup']:>9.2f}x"
                     f"  max |score diff| {p['max_abs_diff']:.1e}")
    for skipped in report["skipped"]:
        lines.append(f"{skipped['metric']:<13}SKIPPED: {skipped['reason']}")
    if report["rows"]:
        lines.append(f"{report['verdict']}: slowest speedup {report['min_speedup']:.2f}x vs target >= "
                     f"{TARGET_SPEEDUP:g}x, scores within {PARITY_TOL:g} (evalkit vs the packages' own calls; "
                     f"{report['config']['setting']})")
    if report["noisy"]:
        lines.append(f"WARNING: repeats of one side differ by more than {NOISY_SPREAD:.0%}; the machine was busy "
                     "and the ratios are unreliable: rerun, or raise --repeats")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="ImageReward and HPSv2: evalkit vs the reference packages' scoring calls")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"),
                   help="evalkit's device (the package side always runs on the CPU, as the parity scripts pin)")
    p.add_argument("--metrics", default=",".join(METRICS), help=f"comma-separated, of {', '.join(METRICS)}")
    p.add_argument("--images", type=int, default=64, help="images per metric (default 64)")
    p.add_argument("--images-per-prompt", type=int, default=1,
                   help="images per prompt (default 1, the protocol's): the package scores one prompt's per call")
    p.add_argument("--batch-size", type=int, default=32, help="evalkit's score batch size (the CLI's default)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per side")
    p.add_argument("--resolution", type=int, default=32, help="generated image size (the metrics resize it)")
    p.add_argument("--ref-python", type=Path, default=REF_PYTHON,
                   help="the reference venv's python (built by bash parity/install-reference.sh)")
    p.add_argument("--ref-timeout", type=int, default=900, help="seconds one reference-script run may take")
    p.add_argument("--json", type=Path, default=None, help="also write the full report here")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where models and images go (default: a temporary folder, removed after)")
    args = p.parse_args(argv)
    args.metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(args.metrics) - set(METRICS))
    if unknown or not args.metrics:
        p.error(f"--metrics: unknown {unknown}; choose from {', '.join(METRICS)}")
    for name in ("images", "images_per_prompt", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.images % args.images_per_prompt:
        p.error("--images must be a multiple of --images-per-prompt")
    if args.resolution % 8:
        p.error("--resolution must be a multiple of 8")
    return args


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from evalkit.generation.protocol import GenerationRequest

    device = GenerationRequest(device=args.device).torch_device()  # evalkit's rules: cuda without CUDA is an error
    if not args.ref_python.exists():
        raise EvalkitError(f"no reference venv python at {args.ref_python}",
                           "build it: bash parity/install-reference.sh (or give --ref-python)")
    torch.manual_seed(0)
    setting = "tiny-cpu" if device.type == "cpu" else f"tiny-{device.type}-vs-package-cpu"
    print(f"evalkit package-baseline bench: tiny parity models, evalkit on {device}, package on cpu, "
          f"{args.images} images per metric ({args.images_per_prompt} per prompt) at {args.resolution} px, "
          f"batch {args.batch_size}, {args.repeats} repeats, threads={torch.get_num_threads()}", flush=True)
    t = time.perf_counter()
    with quiet_loading(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        step_dir = generate_step(work, args.images // args.images_per_prompt, args.images_per_prompt,
                                 args.resolution, str(device))
    print(f"generated images in {time.perf_counter() - t:.1f} s", flush=True)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for name in args.metrics:
        try:
            with quiet_loading(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pair = build_pair(name, work / "models")
            rows.append(measure(name, pair, step_dir, work, args, device))
        except (Skip, EvalkitError, OSError, ImportError) as e:  # one metric's problem must not hide the other
            reason = e.one_line() if isinstance(e, EvalkitError) else f"{type(e).__name__}: {e}"
            print(f"{name}: SKIPPED ({reason})", flush=True)
            skipped.append({"metric": name, "reason": reason})
        finally:
            release_memory(device)
    if not rows:
        raise EvalkitError("no metric could be measured", "see the SKIPPED lines above")
    min_speedup = min(r["summary"]["speedup"] for r in rows)
    agree = all(r["parity"]["max_abs_diff"] <= PARITY_TOL for r in rows)
    return {
        "schema": SCHEMA,
        "config": {"device": str(device), "package_device": "cpu", "setting": setting, "metrics": args.metrics,
                   "images": args.images, "images_per_prompt": args.images_per_prompt,
                   "resolution": args.resolution, "batch_size": args.batch_size, "repeats": args.repeats,
                   "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                   "platform": platform.platform(), "ref_python": str(args.ref_python),
                   "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                   "versions": versions(("evalkit", "torch", "transformers", "open_clip_torch"))},
        "rows": rows,
        "skipped": skipped,
        "min_speedup": min_speedup,
        "target_speedup": TARGET_SPEEDUP,
        "parity_ok": agree,
        "verdict": "PASS" if min_speedup >= TARGET_SPEEDUP and agree else "FAIL",
        "noisy": any(r["summary"]["spread"] > NOISY_SPREAD for r in rows),
    }


def main(argv: Sequence[str] | None = None) -> int:
    return run_and_report(parse_args(argv), run, table)


if __name__ == "__main__":
    sys.exit(main())
