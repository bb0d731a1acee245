"""Scaling efficiency of `evalkit run` under torchrun: N workers against one, same machine, same run.

    efficiency = throughput with N workers / (N x throughput of one worker)

Both sides run the real command line end to end (process start, checkpoint and metric loading,
generation, scoring, and for N workers the rank-0 merge) on a tiny model built from code, into a
fresh output folder each time; they alternate (1, N, 1, N, ...) so drift on a shared machine hits
both alike, and the medians are compared. On CPU every worker gets one thread (OMP_NUM_THREADS=1),
so N workers need N free cores to scale; on CUDA each rank takes its own GPU (cuda:LOCAL_RANK), so
N must not exceed the GPUs present. The report also checks that both sides wrote the same
run.json values (a scaled run that changed a number would be no speed-up at all).

Benchmarks report, they do not assert: exit 0 whatever the efficiency (target: >= 0.9 on GPUs).

    python bench/scaling.py                          # 2 CPU workers, tiny model, ~2 min
    python bench/scaling.py --workers 4 --device cuda --images 256
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import run_and_report, versions  # bench/harness.py (scripts run from bench/)

from evalkit.errors import EvalkitError

TARGET_GPU = 0.9


def _build(work: Path) -> tuple[Path, Path]:
    from evalkit.tiny.clip import build_tiny_clip, write_card
    from evalkit.tiny.sd import build_tiny_sd

    model = work / "tiny-sd"
    build_tiny_sd(seed=0).save_pretrained(str(model))
    card = write_card(work / "clip-tiny.yaml", "clip-tiny", "clip_score", "coco-10k",
                      {"clip": build_tiny_clip(work / "tiny-clip")})
    return model, card


def _one_run(args: argparse.Namespace, model: Path, card: Path, out: Path, workers: int) -> dict[str, Any]:
    command = ["-m", "evalkit.cli", "run", str(model), "--metrics", str(card), "--out", str(out), "--limit",
               str(args.images), "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--device",
               args.device, "--quiet"]
    if workers == 1:
        launch = [sys.executable, *command]
    else:
        launch = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", str(workers),
                  *command]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise EvalkitError(f"{workers}-worker run failed: {done.stderr.strip().splitlines()[-1:]}",
                           "run the printed command by hand to see why")
    run = json.loads((out / "tiny-sd" / "final" / "run.json").read_text(encoding="utf-8"))
    return {"seconds": seconds, "values": {name: m["value"] for name, m in run["metrics"].items()},
            "images": run["provenance"]["n_images"]}


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available() or torch.cuda.device_count() < args.workers:
            raise EvalkitError(f"--device cuda --workers {args.workers} needs {args.workers} GPUs",
                               "pass fewer --workers, or --device cpu")
    model, card = _build(work)
    sides: dict[int, list[dict[str, Any]]] = {1: [], args.workers: []}
    for repeat in range(args.repeats + 1):  # the first pair warms the caches and is not counted
        for workers in (1, args.workers):
            out = work / f"out-{workers}-{repeat}"
            result = _one_run(args, model, card, out, workers)
            shutil.rmtree(out, ignore_errors=True)
            if repeat:
                sides[workers].append(result)
            print(f"  {workers} worker(s), repeat {repeat}: {result['seconds']:.1f} s", flush=True)
    one = statistics.median(r["seconds"] for r in sides[1])
    many = statistics.median(r["seconds"] for r in sides[args.workers])
    images = sides[1][0]["images"]
    same = all(r["values"] == sides[1][0]["values"] for rs in sides.values() for r in rs)
    return {"benchmark": "scaling", "device": args.device, "workers": args.workers, "images": images,
            "steps": args.steps, "threads_per_worker": args.threads, "one_worker_seconds": one,
            f"{args.workers}_workers_seconds": many, "one_worker_images_per_second": images / one,
            "many_workers_images_per_second": images / many, "efficiency": one / (args.workers * many),
            "same_values": same, "target_on_gpus": TARGET_GPU, "cpu_count": os.cpu_count(),
            "versions": versions(["torch", "diffusers"])}


def table(report: dict[str, Any]) -> str:
    n = report["workers"]
    return "\n".join([
        f"scaling on {report['device']}: {report['images']} images, {report['steps']} steps, "
        f"{report['threads_per_worker']} thread(s) per worker, {report['cpu_count']} CPUs",
        f"  1 worker : {report['one_worker_seconds']:.1f} s  ({report['one_worker_images_per_second']:.2f} img/s)",
        f"  {n} workers: {report[f'{n}_workers_seconds']:.1f} s  "
        f"({report['many_workers_images_per_second']:.2f} img/s)",
        f"  efficiency = {report['efficiency']:.2f} (target on GPUs >= {report['target_on_gpus']}); "
        f"run.json values identical: {report['same_values']}",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--images", type=int, default=96, help="COCO prompts per run (one image each)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per worker")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    return run_and_report(parser.parse_args(), measure, table)


if __name__ == "__main__":
    sys.exit(main())
