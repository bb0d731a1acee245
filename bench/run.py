"""The whole speed comparison of issue 10 in one command: every bench, then one report with a verdict per target.

    python bench/run.py --quick --out DIR                  # CPU, tiny models, under 10 minutes
    python bench/run.py --full --device cuda --out DIR     # full-size random-weight shapes on a GPU

Each bench script runs in its own process (so one's device memory and thread pools do not
colour the next) and writes its JSON under DIR/raw/; a bench that fails or times out is recorded
with its error and the others still run. Then `targets` reads the raw reports and judges each
target of issue 10 from ratios measured in this run on this machine (never against numbers from
elsewhere), and DIR/report.json and DIR/report.md are written (keys: bench/README.md).

Targets are set for full-size models on a GPU; a --quick run measures the same ratios on tiny
models on the CPU, which checks the whole path but judges nothing about real sizes: its verdicts
say so (`setting: tiny-cpu`). Like every bench it exits 0 whatever the verdicts, non-zero only
when nothing could be measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SCHEMA = "evalkit.bench.run/1"
PROTOCOL_IMAGES = 14081  # one checkpoint: TIFA v1.0's 4,081 prompts + 10K COCO captions
# The shipped card whose prompt set gives each metric's share of those images.
METRIC_CARDS = {"clip_score": "clip", "tifa": "tifa", "imagereward": "imagereward", "hpsv2": "hpsv2", "fid": "fid"}
# Datasheet dense bf16 tensor throughput (TFLOP/s), by a substring of torch.cuda.get_device_name.
DATASHEET_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1}


@dataclass(frozen=True)
class Bench:
    """One bench process: its script, the arguments of each mode, and how long it may take."""

    name: str
    script: str
    quick: tuple[str, ...]
    full: tuple[str, ...]
    timeout_s: int


BENCHES = (
    Bench("generation_overhead", "generate_overhead.py",
          ("--model", "tiny", "--device", "cpu", "--prompts", "16", "--repeats", "2"),
          ("--model", "sd2", "--device", "cuda", "--resolution", "256", "--batch-size", "32", "--prompts", "64",
           "--repeats", "2"), 900),
    Bench("generation_vs_one_prompt", "generate_overhead.py",
          ("--model", "tiny", "--device", "cpu", "--prompts", "16", "--repeats", "2", "--loop", "one-prompt"),
          ("--model", "sd2", "--device", "cuda", "--resolution", "256", "--batch-size", "32", "--prompts", "64",
           "--repeats", "1", "--loop", "one-prompt"), 1500),
    # torch.compile of the denoiser against eager: steady speed-up, compile cost, break-even (a lever).
    Bench("generation_compile", "generate_overhead.py",
          ("--model", "tiny", "--device", "cpu", "--prompts", "16", "--repeats", "2", "--loop", "compile"),
          ("--model", "sd2", "--device", "cuda", "--resolution", "256", "--batch-size", "32", "--prompts", "128",
           "--repeats", "2", "--loop", "compile"), 1500),
    Bench("generation_vs_one_prompt_512", "generate_overhead.py", (),
          ("--model", "sd2", "--device", "cuda", "--resolution", "512", "--batch-size", "16", "--prompts", "32",
           "--repeats", "1", "--loop", "one-prompt"), 1500),
    Bench("latency", "profile_latency.py", ("--preset", "tiny", "--device", "cpu", "--steps", "4", "--repeats", "2"),
          ("--preset", "sd2", "--resolution", "256", "--device", "cuda", "--repeats", "2"), 900),
    Bench("latency_sdxl", "profile_latency.py", (),
          ("--preset", "sdxl", "--resolution", "256", "--device", "cuda", "--repeats", "2", "--max-batch", "32"), 900),
    Bench("metrics", "metrics_throughput.py", ("--device", "cpu", "--repeats", "2"),
          ("--device", "cuda", "--full", "--repeats", "2"), 1800),
    # The packages' side runs in .venv-ref on the CPU on the parity tests' tiny models; no full-size mode yet.
    Bench("packages", "package_baselines.py", ("--device", "cpu", "--repeats", "2"), (), 900),
)
PACKAGE_TARGET_SPEEDUP = 10.0  # issue 10: ImageReward and HPSv2 >= 10x their packages' own scoring calls
PACKAGE_PARITY_TOL = 1e-4  # a speedup over a package only counts when both sides computed the same scores


@dataclass(frozen=True)
class Target:
    """One line of issue 10's targets, judged from this run's raw reports."""

    name: str
    description: str
    value: float | None
    target: str
    verdict: str  # PASS, FAIL, REPORTED (no goal) or NOT MEASURED
    setting: str  # "full-gpu" (what the target is set for) or "tiny-cpu" (path check only)
    note: str = ""


def judge(value: float | None, ok: bool | None) -> str:
    if value is None or ok is None:
        return "NOT MEASURED"
    return "PASS" if ok else "FAIL"


def _ok(raw: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    entry = raw.get(name)
    return entry["report"] if entry and entry.get("report") else None


def metrics_share(metrics: Mapping[str, Any], generation: Mapping[str, Any],
                  prompt_counts: Mapping[str, int]) -> tuple[float, dict[str, float]]:
    """Seconds to score one checkpoint's images with every measured metric ÷ seconds to generate them.

    Per image costs come from evalkit's side of each bench (medians); each metric scores the
    images of its shipped card's prompt set (`prompt_counts`), generation makes all 14,081."""
    gen_per_image = generation["summary"]["evalkit"]["gen"]["median"] / generation["config"]["images"]
    config = metrics["config"]
    per_metric: dict[str, float] = {}
    for row in metrics["rows"]:
        if row["metric"] not in prompt_counts:
            continue  # e.g. TIFA's VQA-only row: part of the tifa row already
        images = {"tifa": config["tifa_images"], "fid": config["fid_images"]}.get(row["metric"], config["images"])
        per_metric[row["metric"]] = row["summary"]["evalkit_seconds_median"] / images * prompt_counts[row["metric"]]
    return sum(per_metric.values()) / (gen_per_image * PROTOCOL_IMAGES), per_metric


def mfu(latency: Mapping[str, Any], matmul_tflops: float | None) -> float | None:
    """Best achieved TFLOP/s over the batch sweep ÷ the matmul throughput measured in this run."""
    achieved = latency.get("achieved_tflops") or {}
    if not achieved or not matmul_tflops:
        return None
    return max(achieved.values()) / matmul_tflops


def package_targets(packages: Mapping[str, Any] | None, setting: str) -> list[Target]:
    """ImageReward and HPSv2 over their reference packages' own scoring calls (bench/package_baselines.py).

    PASS needs both the speedup and score parity: a faster evalkit that scores differently from the
    package is not the package's metric made faster. The package side always runs on the CPU."""
    out = []
    rows = {r["metric"]: r for r in (packages or {}).get("rows", [])}
    for metric in ("imagereward", "hpsv2"):
        description = f"{metric} images/s over its reference package's own scoring call"
        row = rows.get(metric)
        if row is None:
            skipped = [s["reason"] for s in (packages or {}).get("skipped", []) if s["metric"] == metric]
            note = f"skipped: {skipped[0]}" if skipped else ("" if packages else "the packages bench did not run")
            out.append(Target(f"{metric}_vs_package", description, None, f">= {PACKAGE_TARGET_SPEEDUP:g}x",
                              "NOT MEASURED", setting, note))
            continue
        s, diff = row["summary"], row["parity"]["max_abs_diff"]
        agree = diff <= PACKAGE_PARITY_TOL
        config = packages["config"] if packages else {}
        note = (f"{row['images']} images: evalkit {s['evalkit_images_per_second']:.3g} img/s on "
                f"{config.get('device', '?')}, package {s['package_images_per_second']:.3g} img/s on "
                f"{config.get('package_device', 'cpu')}; parity max |diff| {diff:.1e}"
                + ("" if agree else f" > {PACKAGE_PARITY_TOL:g}: SCORES DISAGREE")
                + ("; NOISY" if packages and packages.get("noisy") else ""))
        out.append(Target(f"{metric}_vs_package", description, s["speedup"], f">= {PACKAGE_TARGET_SPEEDUP:g}x",
                          judge(s["speedup"], s["speedup"] >= PACKAGE_TARGET_SPEEDUP and agree), setting, note))
    return out


def targets(raw: Mapping[str, Any], setting: str, matmul: Mapping[str, Any],
            prompt_counts: Mapping[str, int]) -> list[Target]:
    """Every target of issue 10, judged from the raw reports of one run (pure: tests feed it dicts)."""
    out: list[Target] = []
    latency = _ok(raw, "latency")
    value = mfu(latency, matmul.get("tflops")) if latency else None
    peak = matmul.get("datasheet_tflops")
    note = (f"best achieved {max(latency['achieved_tflops'].values()):.3g} TFLOP/s; matmul measured "
            f"{matmul.get('tflops') or 0:.3g} ({matmul.get('dtype')})"
            + (f"; {max(latency['achieved_tflops'].values()) / peak:.1%} of the datasheet {peak:g}" if peak else "")
            ) if latency and value is not None else ""
    out.append(Target("generation_mfu", "generation model FLOPs utilisation (SD2-shaped UNet, 256 px on GPU)",
                      value, ">= 0.40", judge(value, None if value is None else value >= 0.40), setting, note))
    for name, label, goal in (("generation_vs_one_prompt", "256 px", 15.0),
                              ("generation_vs_one_prompt_512", "512 px", None)):  # 512 px: reported only
        report = _ok(raw, name)
        value = report["speedup"] if report else None
        verdict = "REPORTED" if goal is None and value is not None else judge(
            value, None if value is None or goal is None else value >= goal)
        out.append(Target(name, f"evalkit images/s over the one-prompt pipe(prompt) loop ({label})", value,
                          f">= {goal:g}x" if goal else "reported", verdict, setting,
                          f"ran at {report['config']['resolution']} px; parity max |diff| "
                          f"{report['parity']['max_abs_diff']}{'; NOISY' if report.get('noisy') else ''}"
                          if report else ""))
    generation, metrics = _ok(raw, "generation_overhead"), _ok(raw, "metrics")
    if generation and metrics:
        share, per_metric = metrics_share(metrics, generation, prompt_counts)
        note = "; ".join(f"{k} {v:.3g} s" for k, v in per_metric.items())
        out.append(Target("metrics_share", "all metrics on one checkpoint's images ÷ its generation time",
                          share, "<= 0.10", judge(share, share <= 0.10), setting, note))
    else:
        out.append(Target("metrics_share", "all metrics on one checkpoint's images ÷ its generation time",
                          None, "<= 0.10", judge(None, None), setting))
    tifa = next((r for r in (metrics or {}).get("rows", []) if r["metric"] == "tifa"), None)
    value = tifa["summary"]["speedup"] if tifa else None
    out.append(Target("tifa_vs_reference_loop", "TIFA questions/s over the reference's per-question loop",
                      value, ">= 20x", judge(value, None if value is None else value >= 20.0), setting))
    out += package_targets(_ok(raw, "packages"), setting)
    overhead = generation["overhead"]["generation_median"] if generation else None
    out.append(Target("harness_overhead", "evalkit generation time over the bare batched loop, minus 1",
                      overhead, "<= 0.03", judge(overhead, None if overhead is None else overhead <= 0.03), setting,
                      "GPU busy fraction not measured yet"))
    return out


def levers(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The levers measured on their own in this run (evalkit with the lever against evalkit without it,
    same models and inputs), each with its parity check: what docs/performance.md's lever table quotes."""
    out = generation_levers(raw)
    metrics = _ok(raw, "metrics")
    if not metrics:
        return out
    one = metrics.get("one_pass")
    if one:
        out.append({"name": "one_pass", "description": f"{'+'.join(one['metrics'])} in one score_step call vs a "
                    "call per metric (each PNG read and decoded once, not once per metric)",
                    "speedup": one["speedup"], "parity": "values equal" if one["values_equal"] else "values DIFFER"})
    for row in metrics["rows"]:
        if row["metric"] == "tifa/git-cache":
            p = row["parity"]
            out.append({"name": "git_image_token_cache", "description": "GIT's image tokens through the decoder "
                        "once per image vs tiled over every question row (batched both)",
                        "speedup": row["summary"]["speedup"],
                        "parity": f"{p['answers_equal']}/{p['answers']} answers equal"})
    return out


def generation_levers(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    compiled = _ok(raw, "generation_compile")
    if not compiled:
        return []
    cost, even, p = compiled["compile_seconds"], compiled["breakeven_images"], compiled["parity"]

    def images(value: float | None) -> str:
        return "never" if value is None else f"{value:,.0f}"

    return [{"name": "torch_compile", "description": f"the denoiser torch.compile'd ({compiled['config']['backend']}) "
             f"vs eager, steady state; compile {cost['cold']:.1f} s cold / {cost['warm']:.1f} s warm cache, "
             f"pays after {images(even['cold'])} / {images(even['warm'])} images",
             "speedup": compiled["speedup"],
             "parity": f"max |diff| {p['max_abs_diff']} uint8 levels over {p['images']} images",
             "noisy": compiled["noisy"]}]


def matmul_throughput(device: str) -> dict[str, Any]:
    """Dense matmul TFLOP/s in this process: bf16 on CUDA (the dtype generation runs), float32 on CPU."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    n, repeats = (8192, 20) if device == "cuda" else (1024, 10)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / repeats
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    peak = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None) if device == "cuda" else None
    return {"device": name, "dtype": str(dtype).removeprefix("torch."), "n": n, "tflops": 2 * n ** 3 / seconds / 1e12,
            "datasheet_tflops": peak}


def run_bench(bench: Bench, args: tuple[str, ...], raw_dir: Path) -> dict[str, Any]:
    out = raw_dir / f"{bench.name}.json"
    log = raw_dir / f"{bench.name}.log"
    command = [sys.executable, str(BENCH / bench.script), *args, "--json", str(out)]
    t0 = time.perf_counter()
    try:
        with log.open("w", encoding="utf-8") as sink:
            proc = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, timeout=bench.timeout_s,
                                  cwd=BENCH.parent)
        error = None if proc.returncode == 0 and out.is_file() else f"exit {proc.returncode}; see {log.name}"
    except subprocess.TimeoutExpired:
        error = f"timed out after {bench.timeout_s} s; see {log.name}"
    seconds = time.perf_counter() - t0
    print(f"{bench.name}: {'ok' if error is None else error} ({seconds:.0f} s)", flush=True)
    report = json.loads(out.read_text(encoding="utf-8")) if error is None else None
    return {"command": " ".join(["python", f"bench/{bench.script}", *args]), "seconds": seconds, "error": error,
            "report": report}


def prompt_counts() -> dict[str, int]:
    from evalkit.metrics.registry import shipped_cards
    from evalkit.prompts.sets import load_prompt_set

    cards = shipped_cards()
    return {impl: len(load_prompt_set(cards[name].prompt_set)) for impl, name in METRIC_CARDS.items()}


def render_markdown(report: Mapping[str, Any]) -> str:
    lines = [f"# evalkit speed report ({report['mode']})", "",
             f"Device: {report['machine']['matmul']['device']}; {report['machine']['cpu_count']} CPUs; "
             f"versions: {', '.join(f'{k} {v}' for k, v in report['machine']['versions'].items())}.", "",
             f"Command: `{report['command']}` ({report['wall_seconds']:.0f} s).", ""]
    if report["setting"] == "tiny-cpu":
        lines += ["**Tiny models on the CPU: these verdicts check the path, not the targets, which are set for "
                  "full-size models on a GPU.**", ""]
    lines += ["| target | value | goal | verdict | note |", "|---|---|---|---|---|"]
    for t in report["targets"]:
        value = "—" if t["value"] is None else f"{t['value']:.3g}"
        lines.append(f"| {t['name']}: {t['description']} | {value} | {t['target']} | {t['verdict']} | {t['note']} |")
    if report.get("levers"):
        lines += ["", "| lever | speed-up | parity |", "|---|---|---|"]
        lines += [f"| {lv['name']}: {lv['description']} | {lv['speedup']:.2f}x | {lv['parity']} |"
                  for lv in report["levers"]]
    lines += ["", "| bench | seconds | status | command |", "|---|---|---|---|"]
    for name, entry in report["raw"].items():
        lines.append(f"| {name} | {entry['seconds']:.0f} | {entry['error'] or 'ok'} | `{entry['command']}` |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="every evalkit bench, then one report with a verdict per target")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="CPU, tiny models (under 10 minutes)")
    mode.add_argument("--full", action="store_true", help="full-size random-weight shapes (needs --device cuda)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--only", default="", help="comma-separated bench names (default: all of the mode)")
    args = p.parse_args(argv)
    if args.full and args.device != "cuda":
        p.error("--full runs full-size models: give --device cuda (a CPU run is --quick)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(BENCH))
    from harness import versions

    started = time.perf_counter()
    raw_dir = args.out / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    chosen = [b for b in BENCHES if (b.full if args.full else b.quick)]
    if args.only:
        chosen = [b for b in chosen if b.name in args.only.split(",")]
    raw = {b.name: run_bench(b, b.full if args.full else b.quick, raw_dir) for b in chosen}
    if not any(entry["report"] for entry in raw.values()):
        print("no bench could be measured; see the logs in " + str(raw_dir), file=sys.stderr)
        return 1
    matmul = matmul_throughput(args.device)
    setting = "full-gpu" if args.full else "tiny-cpu"
    report = {
        "schema": SCHEMA, "mode": "full" if args.full else "quick", "setting": setting,
        "command": "python bench/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"matmul": matmul, "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "versions": versions(("evalkit", "torch", "diffusers", "transformers"))},
        "targets": [asdict(t) for t in targets(raw, setting, matmul, prompt_counts())],
        "levers": levers(raw),
        "raw": raw,
        "wall_seconds": time.perf_counter() - started,
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    print(render_markdown(report))
    print(f"wrote {args.out / 'report.json'} and {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
