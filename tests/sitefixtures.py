"""Realistic output folders for the leaderboard and site tests, written without any model.

`write_runs(root)` lays out OUT/<model>/<step>/ the way generate + score + run.json leave it
(docs/results.md): generation.json, manifest.jsonl, PNGs, scores/<metric>/<fp16>.jsonl and
run.json. What it holds, and what the tests rely on:

* `tiny-train` steps 100/200/300 (CLIP 0.20, 0.28, 0.25: the best step is not the latest);
* `sd-final` (a `final` step) and `eff-small` / XSS_MODEL (with profile.json-like `efficiency`);
* `clip-v2-model`: same protocol, but its CLIP has another metric fingerprint -> its own board;
* `fast-sampler`: another protocol (25 steps) -> its own board;
* a user prompt file whose prompts include HTML/JS (XSS_PROMPT), referenced by generation.json.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from evalkit.fileio.hashing import sha256_bytes, sha256_file, sha256_json
from evalkit.metrics.tifa.metric import RECORD_VIEW as TIFA_VIEW

XSS_MODEL = "<img src=x onerror=alert(1)>"
XSS_PROMPT = "</script><script>window.pwned=1</script>"
PROMPTS = [
    {"id": "red-cube", "text": "a red cube on a table", "tags": ["objects"]},
    {"id": "cat", "text": 'a <b>bold</b> & "quoted" cat', "tags": ["animals"]},
    {"id": "xss", "text": XSS_PROMPT, "tags": ["objects"]},
    {"id": "dog", "text": "a dog in the snow", "tags": ["animals"]},
]
# Display names as the shipped cards spell them (the long ones are what a layout must fit).
DISPLAY = {"clip": "CLIP score", "fid": "FID", "tifa": "TIFA (GIT-large VQA)",
           "clip-l14": "CLIP score (ViT-L/14, cosine)", "imagereward": "ImageReward", "hpsv2": "HPS v2.1"}
WIDE_MODELS = ("stabilityai/stable-diffusion-2-1-base", "runwayml/stable-diffusion-v1-5",
               "my-lab/unet-scaling-2.3B-1024ch-run7", "sd-2-1-finetuned-on-laion-aesthetics-6.5plus")
CLIP_FP = "c" * 64
CLIP_V2_FP = "d" * 64
FID_FP = "f" * 64
PROTOCOL_50 = {"scheduler": "DDIMScheduler", "steps": 50, "guidance_scale": 7.5, "seed": 0, "resolution": [64, 64],
               "dtype": "float32", "negative_prompt": "", "images_per_prompt": 1, "eta": 0.0,
               "seed_scheme": "evalkit-seed-v1"}
PROTOCOL_25 = {**PROTOCOL_50, "steps": 25}


def protocol(base: dict[str, Any]) -> dict[str, Any]:
    return {**base, "fingerprint": sha256_json(base)}


@dataclass
class Runs:
    out: Path
    prompt_file: Path
    prompt_set: str
    prompt_set_fingerprint: str
    run_files: dict[tuple[str, str], Path] = field(default_factory=dict)  # (model, step label) -> run.json

    def run(self, model: str, step: str) -> Path:
        return self.run_files[(model, step)]


def write_prompt_file(root: Path) -> tuple[Path, str, str]:
    """(path, prompt-set name, fingerprint) of a user prompt file, as evalkit loads it."""
    from evalkit.prompts.sets import load_prompt_set

    path = root / "gallery-prompts.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS), encoding="utf-8")
    loaded = load_prompt_set(path)
    return path, loaded.name, loaded.fingerprint


def write_runs(root: Path) -> Runs:
    prompt_file, set_name, set_fp = write_prompt_file(root / "prompts")
    runs = Runs(root / "out", prompt_file, set_name, set_fp)
    p50, p25 = protocol(PROTOCOL_50), protocol(PROTOCOL_25)
    for step, clip in ((100, 0.20), (200, 0.28), (300, 0.25)):
        write_step(runs, "tiny-train", step, p50, {"clip": clip, "fid": 90.0 - step / 10})
    write_step(runs, "sd-final", None, p50, {"clip": 0.31, "fid": 40.0}, efficiency=profile_record(1.3e9, 4.1e13, 2.5))
    write_step(runs, XSS_MODEL, None, p50, {"clip": 0.22}, efficiency=profile_record(2.0e8, 5.0e12, 0.4))
    write_step(runs, "eff-small", None, p50, {"clip": 0.18, "fid": 70.0},
               efficiency=profile_record(5.0e7, 1.0e12, None))
    write_step(runs, "clip-v2-model", None, p50, {"clip": 0.40}, clip_fp=CLIP_V2_FP)
    write_step(runs, "fast-sampler", None, p25, {"clip": 0.26})
    return runs


def write_wide_runs(root: Path) -> Runs:
    """A board the size users publish: four long-named models, five metrics with the shipped cards'
    display names, TIFA (a headline card) among them and not first by name."""
    prompt_file, set_name, set_fp = write_prompt_file(root / "prompts")
    runs = Runs(root / "out", prompt_file, set_name, set_fp)
    p50 = protocol(PROTOCOL_50)
    for index, model in enumerate(WIDE_MODELS):
        write_step(runs, model, None, p50, {"clip-l14": 0.2612 + 0.0031 * index, "fid": 21.37 - 1.1 * index,
                                            "hpsv2": 0.2519 + 0.002 * index, "imagereward": 0.1234 + 0.05 * index,
                                            "tifa": 0.8123 - 0.02 * index})
    return runs


def profile_record(parameters: float, per_image_macs: float, seconds: float | None) -> dict[str, Any]:
    """The parts of a profile.json (evalkit.profile/1) the leaderboard reads."""
    latency = None
    if seconds is not None:
        latency = {"device": {"type": "cuda", "name": "NVIDIA H100"}, "dtype": "bfloat16", "resolution": 64,
                   "steps": 50, "guidance_scale": 7.5, "scheduler": "DDIMScheduler", "memory_method": "torch.cuda",
                   "weights": "loaded", "stopped": "",
                   "points": [{"batch_size": 1, "seconds": [seconds], "median_seconds": seconds,
                               "seconds_per_image": seconds, "images_per_second": 1 / seconds,
                               "peak_memory_bytes": 3 * 2**30, "baseline_memory_bytes": 2**30}],
                   "batch1_seconds_per_image": seconds, "best_batch_size": 1, "best_images_per_second": 1 / seconds}
    denoiser = int(per_image_macs / 100)
    return {"schema": "evalkit.profile/1", "name": "profiled", "pipeline_class": "StableDiffusionPipeline",
            "family": "sd", "parameters": {"dtype": "bfloat16", "components": [], "total": int(parameters),
                                           "total_bytes": int(parameters) * 2, "denoiser": int(parameters * 0.7)},
            "compute": [{"resolution": 64, "latent_side": 8, "batch": 1,
                         "denoiser": {"conv": denoiser, "linear": 0, "matmul": 0, "attention": 0,
                                      "attention_matmul": 0, "total": denoiser},
                         "per_image": {"conv": int(per_image_macs), "linear": 0, "matmul": 0, "attention": 0,
                                       "attention_matmul": 0, "total": int(per_image_macs)}}],
            "latency": latency, "notes": []}


def write_step(runs: Runs, model: str, step: int | None, proto: dict[str, Any], values: dict[str, float],
               efficiency: dict[str, Any] | None = None, clip_fp: str = CLIP_FP,
               finished: str = "2026-11-22T10:30:00+00:00") -> Path:
    """One complete step folder; returns its run.json."""
    from evalkit.generation.checkpoints import safe_name

    label = str(step) if step is not None else "final"
    step_dir = runs.out / safe_name(model) / label
    images = step_dir / "images" / runs.prompt_set
    images.mkdir(parents=True, exist_ok=True)
    manifest = []
    seed_base = int(sha256_bytes(f"{model}/{label}".encode())[:6], 16)
    for index, prompt in enumerate(PROMPTS):
        rel = f"images/{runs.prompt_set}/{prompt['id']}_0.png"
        color = ((seed_base + 40 * index) % 256, (seed_base // 7 + 90 * index) % 256, (seed_base // 13) % 256)
        Image.new("RGB", (48, 48), color).save(step_dir / rel)
        manifest.append({"prompt_set": runs.prompt_set, "prompt_id": prompt["id"],
                         "prompt_sha256": sha256_bytes(prompt["text"].encode("utf-8")), "k": 0,
                         "seed": index, "file": rel, "sha256": sha256_file(step_dir / rel), "seconds": 0.1,
                         "batch_size": 4})
    (step_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in manifest), encoding="utf-8")
    checkpoint_fp = sha256_bytes(f"weights:{model}:{label}".encode())
    generation = {"schema": "evalkit.generation/1",
                  "checkpoint": {"name": model, "step": step, "fingerprint": checkpoint_fp},
                  "protocol": proto, "prompt_sets": {runs.prompt_set: {
                      "fingerprint": runs.prompt_set_fingerprint, "n": len(PROMPTS), "version": "user",
                      "source": str(runs.prompt_file.resolve())}}}
    (step_dir / "generation.json").write_text(json.dumps(generation, indent=2), encoding="utf-8")
    metrics = {}
    for name, value in values.items():
        fingerprint = clip_fp if name == "clip" else FID_FP if name == "fid" else sha256_bytes(name.encode())
        metrics[name] = _metric(runs, step_dir, name, value, fingerprint, manifest)
    run = {
        "schema_version": "evalkit.run/1",
        "checkpoint": {"name": model, "step": step, "step_label": label, "fingerprint": checkpoint_fp,
                       "pipeline_class": "StableDiffusionPipeline",
                       "source": {"kind": "training_step" if step is not None else "pipeline_dir",
                                  "path": f"/models/{model}"}},
        "protocol": proto,
        "prompt_sets": {runs.prompt_set: {"fingerprint": runs.prompt_set_fingerprint, "n": len(PROMPTS)}},
        "metrics": metrics,
        "provenance": {"evalkit": "0.1.0", "git_commit": None,
                       "versions": {"torch": "2.13.0", "diffusers": "0.42.1", "transformers": "5.23.0"},
                       "device": {"type": "cpu", "name": "cpu"}, "platform": "linux",
                       "started": "2026-11-22T10:00:00+00:00", "finished": finished,
                       "seconds": {"generate": 12.0, "score": {n: 1.0 for n in values}},
                       "images_per_second": {"generate": 0.3, "score": {n: 4.0 for n in values}}},
    }
    if efficiency is not None:
        run["efficiency"] = efficiency
        (step_dir / "profile.json").write_text(json.dumps(efficiency, indent=2), encoding="utf-8")
    path = step_dir / "run.json"
    path.write_text(json.dumps(run, indent=2), encoding="utf-8")
    runs.run_files[(model, label)] = path.resolve()
    return path


QUESTION_KINDS = (("object", "cat", "Is there a cat?", ("yes", "no"), "yes"),
                  ("color", "red", "What color is the cat?", ("red", "blue", "green"), "red"),
                  ("counting", "2", "How many cats are there?", ("1", "2", "3"), "2"))


def _question(prompt_id: str, q: int, correct: bool) -> dict[str, Any]:
    """A stored TIFA QuestionRecord: the question, its expected answer and the VQA model's answers."""
    kind, element, question, choices, answer = QUESTION_KINDS[q]
    chosen = answer if correct else next(c for c in choices if c != answer)
    return {"prompt_id": prompt_id, "question": question, "choices": list(choices), "answer": answer,
            "element_type": kind, "element": element, "free_form_answer": f"{chosen} <b>!</b>", "chosen": chosen,
            "correct": correct}


def _metric(runs: Runs, step_dir: Path, name: str, value: float, fingerprint: str,
            manifest: list[dict[str, Any]]) -> dict[str, Any]:
    records = f"scores/{name}/{fingerprint[:16]}.jsonl"
    lines = []
    for index, row in enumerate(manifest):
        if name == "fid":  # FID keeps features, not per-image values
            recs: list[dict[str, Any]] = [{"features": base64.b64encode(bytes(16)).decode("ascii")}]
        elif name.startswith("tifa"):  # one record per question, as TifaMetric stores them
            recs = [_question(row["prompt_id"], q, correct=(index + q) % 3 != 0) for q in range(3)]
        else:
            recs = [{"value": round(value + 0.01 * (index - 1.5), 6)}]
        lines.append({"file": row["file"], "image_sha256": row["sha256"], "prompt_set": runs.prompt_set,
                      "prompt_id": row["prompt_id"], "k": 0, "records": recs})
    path = step_dir / records
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in lines), encoding="utf-8")
    higher = name != "fid"
    metric: dict[str, Any] = {
        "value": value, "ci95": [round(value - 0.02, 6), round(value + 0.02, 6)], "n": len(manifest),
        "higher_is_better": higher, "display_name": DISPLAY.get(name, name), "version": "1",
        **({"headline": True, "record_view": TIFA_VIEW.to_json()} if name.startswith("tifa") else {}),
        "prompt_set": runs.prompt_set, "prompt_set_fingerprint": runs.prompt_set_fingerprint,
        "fingerprint": fingerprint, "card": {"name": name, "implementation": name},
        "values": {"value": value, "n": len(manifest)},
        "bootstrap": {"method": "percentile", "unit": "prompt", "resamples": 1000, "seed": 0, "level": 0.95},
        "by_category": {}, "records": records, "units": f"scores/{name}/{fingerprint[:16]}.units.json",
    }
    if name == "clip":
        metric["by_category"] = {"category": {
            "objects": {"value": value + 0.01, "ci95": [value - 0.01, value + 0.03], "n": 2},
            "animals": {"value": value - 0.01, "ci95": [value - 0.03, value + 0.01], "n": 2},
            "<i>odd</i>": {"value": value, "ci95": [None, None], "n": 0}}}
    return metric
