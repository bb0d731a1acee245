"""ImageReward and HPSv2 through evalkit against their reference packages' own scoring calls, one run.

Issue 10 asks that evalkit score ImageReward and HPSv2 at least 10x the images/s of the packages
a user would otherwise call (image-reward 1.5, hpsv2 1.2.0). Those packages cannot be installed
next to evalkit, so their side runs in `.venv-ref`, in a process of its own that lives as long as
the metric's measurement: a parity script in its serve-rounds mode (``parity/ref_imagereward.py
--serve`` / ``parity/ref_hpsv2.py --serve``; protocol and timing loop in parity/timing.py), which
loads the model once and then runs one timed pass of the package's own call over all images each
time the bench asks. Both sides score the same images with the same weights — the tiny random
checkpoints the parity tests use (evalkit/tiny/reference.py), in each package's own layout on its
side and converted on evalkit's — and the scores are compared, so a speedup is only reported next
to the evidence that the two sides computed the same thing.

* evalkit: ``score_step(step_dir, [metric], device, batch_size=B)`` on a fresh, unscored copy of a
  step folder of tiny-generator output each pass (read, hash-check, prepare, batched scoring,
  store, aggregate: the whole call is timed); the model is loaded once before, not timed.
* package: in .venv-ref, the model loaded once (not timed), then per prompt the call its README
  shows: ImageReward ``model.score(prompt, [paths])`` under ``torch.no_grad``; hpsv2
  ``hpsv2.img_score.score([paths], prompt, cp=checkpoint)`` (which reloads the checkpoint file
  on every call: that is the package's own cost, so it is timed with it). Each pass is timed in
  that process, so the pipe to it is not counted.

The sides are interleaved, as metrics_throughput.py's ``alternate`` does: one untimed warm-up pass
per side, then for each of ``--repeats`` repeats evalkit's timed pass followed by the package's
(whose process waits on its stdin meanwhile), so a machine that gets busier or quieter during the
run weighs on both sides of a repeat alike; run one after the other instead, a busy machine gave
ratios from 0.19x to 17x. Each repeat's times and ratio are printed; medians are reported, speedup
= package seconds ÷ evalkit seconds (median over median; the per-repeat ratios are in the JSON).
The package side always runs on the CPU in float32 (the parity scripts pin it, so the scores are
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
import contextlib
import json
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
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
# Timed sides: each call of a side is one timed pass over every image, (seconds, what it scored)

Side = Callable[[], tuple[float, Any]]


def evalkit_side(metric: Metric, step_dir: Path, runs: Path, images: int, batch_size: int, calls: int,
                 device: torch.device) -> Side:
    """One `score_step` call per invocation, each on its own unscored copy (all `calls` copies made
    now, before any clock starts); returns (seconds, (scored folder, result))."""
    from evalkit.scoring.engine import score_step

    pending = [fresh_copy(step_dir, runs / f"evalkit-{i}") for i in range(calls)]

    def one_call() -> tuple[float, Any]:
        folder = pending.pop()
        t0 = synced_clock(device)
        result = score_step(folder, [metric], device, batch_size=batch_size, quiet=True)[0]
        elapsed = synced_clock(device) - t0
        if result.scored != images:
            raise RuntimeError(f"evalkit scored {result.scored} of {images} images; the copy was not fresh")
        return elapsed, (folder, result)

    return one_call


def stored_values(folder: Path, result: Any) -> dict[tuple[str, str], float]:
    """Per-image values as evalkit's store holds them after the call, keyed (file, sha256)."""
    from evalkit.scoring.store import ScoreStore

    stored = ScoreStore(folder, result.metric, result.fingerprint).scored()
    return {key: float(records[0]["value"]) for key, records in stored.items()}


class PackageServer:
    """The reference script in .venv-ref in its serve-rounds mode (`parity/ref_*.py --serve SPEC.json`;
    protocol: parity/timing.py): the package's model loaded once in its own process (it cannot be
    imported next to evalkit), then one pass of its own call over every case per `round()`, timed in
    that process. A long-lived process, so that its passes can alternate with evalkit's; it waits on
    its stdin between rounds, so it takes no CPU from evalkit's pass. `timeout` bounds its whole life."""

    def __init__(self, script: str, spec: dict[str, Any], ref_python: Path, tmp: Path, timeout: int) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        spec_file, self.log = tmp / f"{script}.spec.json", tmp / f"{script}.stderr.log"
        spec_file.write_text(json.dumps(spec), encoding="utf-8")
        self.script, self.timeout = script, timeout
        self.deadline = time.monotonic() + timeout
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
        env.pop("PYTHONPATH", None)  # the reference venv must not import this checkout's packages
        with self.log.open("w", encoding="utf-8") as err:
            self.proc = subprocess.Popen(
                [str(ref_python), str(REPO / "parity" / f"{script}.py"), "--serve", str(spec_file)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1, env=env, cwd=tmp)
        self.watchdog = threading.Timer(timeout, self.proc.kill)
        self.watchdog.daemon = True
        self.watchdog.start()
        try:
            self.ready = self.receive("ready", "call", "torch_threads")
        except Skip:
            self.close()
            raise

    def __enter__(self) -> PackageServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def round(self) -> tuple[float, list[list[float]]]:
        """One timed pass of the package's call over every case: its seconds and scores (per case, per image)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("round\n")
            self.proc.stdin.flush()
        except OSError as e:  # it died between rounds (BrokenPipeError)
            raise Skip(self.failure("")) from e
        reply = self.receive("seconds", "scores")
        return float(reply["seconds"]), reply["scores"]

    def receive(self, *keys: str) -> dict[str, Any]:
        """The next protocol line, which must be a JSON object holding `keys`; else the reason, as a Skip."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        try:
            message = json.loads(line) if line else None
        except json.JSONDecodeError:
            message = None
        if not isinstance(message, dict) or not set(keys) <= message.keys():
            raise Skip(self.failure(line))
        return message

    def failure(self, line: str) -> str:
        """One line saying why the server gave no usable reply."""
        if time.monotonic() >= self.deadline:
            return f"{self.script} in the reference venv timed out after {self.timeout} s"
        if line.strip():
            return f"{self.script} in the reference venv replied {line.strip()[:80]!r}, not a protocol line"
        try:
            code: int | None = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        tail = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or ["no output"]
        return f"{self.script} failed in the reference venv (exit {code}): {tail[0]}"

    def close(self) -> None:
        """End of its stdin ends it; one that does not go within 30 s is killed."""
        self.watchdog.cancel()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass(frozen=True)
class Interleaved:
    """Seconds per timed pass of each side (same order), their warm-ups, and each side's last result."""

    evalkit: list[float]
    package: list[float]
    warmup: dict[str, float]
    last: dict[str, Any]


def interleave(evalkit: Side, package: Side, repeats: int) -> Interleaved:
    """As metrics_throughput.py's `alternate`: one untimed warm-up per side, then for each repeat
    evalkit's timed pass and then the package's, so that a machine getting busier or quieter weighs
    on both sides of each repeat alike (run one after the other, ratios from 0.19x to 17x were seen).
    Each side times itself: evalkit around `score_step`, the package inside its own process."""
    warmup: dict[str, float] = {}
    last: dict[str, Any] = {}
    warmup["evalkit"], last["evalkit"] = evalkit()
    warmup["package"], last["package"] = package()
    ours: list[float] = []
    base: list[float] = []
    for i in range(repeats):
        seconds, last["evalkit"] = evalkit()
        ours.append(seconds)
        seconds, last["package"] = package()
        base.append(seconds)
        print(f"  repeat {i + 1}/{repeats}: evalkit {ours[-1]:.3f} s, package {base[-1]:.3f} s, "
              f"speedup {base[-1] / ours[-1]:.2f}x", flush=True)
    return Interleaved(ours, base, warmup, last)


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
    script = SCRIPTS[metric_name]
    try:
        evalkit = evalkit_side(metric, step_dir, runs, len(items), args.batch_size, args.repeats + 1, device)
        t0 = time.perf_counter()
        with PackageServer(script, {**pair.spec, "cases": cases}, args.ref_python, work / "ref" / metric_name,
                           args.ref_timeout) as server:
            print(f"  package: {script} --serve in {args.ref_python.parent.parent.name}, loaded in "
                  f"{time.perf_counter() - t0:.1f} s; warm-up each side, then {args.repeats} interleaved "
                  "repeats", flush=True)
            timed = interleave(evalkit, server.round, args.repeats)
        values = stored_values(*timed.last["evalkit"])
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    return row(metric_name, pair, groups, timed, values, server.ready)


def row(metric_name: str, pair: Pair, groups: list[list[ImageItem]], timed: Interleaved,
        values: dict[tuple[str, str], float], ready: dict[str, Any]) -> dict[str, Any]:
    """One metric's report row: medians, speedup, and the parity of the last passes' scores (evalkit's
    stored `values` against the package's scores for the same paths)."""
    diffs = [abs(values[(it.file, it.sha256)] - score)
             for group, scores in zip(groups, timed.last["package"], strict=True)
             for it, score in zip(group, scores, strict=True)]
    n, ours, base = sum(len(g) for g in groups), timed.evalkit, timed.package
    o, b = statistics.median(ours), statistics.median(base)
    return {
        "metric": metric_name, "model": pair.model, "images": n, "prompts": len(groups),
        "package_call": ready["call"],
        "runs": {"evalkit": ours, "package": base},
        "summary": {"evalkit_seconds_median": o, "package_seconds_median": b,
                    "evalkit_images_per_second": n / o, "package_images_per_second": n / b,
                    "speedup": b / o, "speedup_per_repeat": [p / e for e, p in zip(ours, base, strict=True)],
                    "spread": max(max(s) / min(s) - 1.0 for s in (ours, base))},
        "parity": {"max_abs_diff": max(diffs), "images": len(diffs), "tolerance": PARITY_TOL},
        "package": {"warmup_seconds": timed.warmup["package"], "torch_threads": ready["torch_threads"],
                    "versions": ready.get("versions", {})},
        "evalkit": {"warmup_seconds": timed.warmup["evalkit"]},
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
    p.add_argument("--repeats", type=int, default=3, help="timed passes per side (interleaved)")
    p.add_argument("--resolution", type=int, default=32, help="generated image size (the metrics resize it)")
    p.add_argument("--ref-python", type=Path, default=REF_PYTHON,
                   help="the reference venv's python (built by bash parity/install-reference.sh)")
    p.add_argument("--ref-timeout", type=int, default=900,
                   help="seconds the reference script's process may live per metric (loading and every pass)")
    p.add_argument("--json", type=Path, default=None, help="also write the full report here")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where models and images go (default: a temporary folder, removed after)")
    args = p.parse_args(argv)
    args.metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(args.metrics) - set(METRICS))
    if unknown or not args.metrics:
        p.error(f"--metrics: unknown {unknown}; choose from {', '.join(METRICS)}")
    for name in ("images", "images_per_prompt", "batch_size", "repeats", "ref_timeout"):
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
                   "order": "interleaved", "images": args.images, "images_per_prompt": args.images_per_prompt,
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
