"""Metric scoring throughput: evalkit's batched, pipelined scoring against the naive loop, one run.

Scoring a checkpoint sweep means tens of thousands of images per metric, so how fast a metric
scores decides whether evaluation keeps up with training. evalkit batches images (and, for TIFA,
all of an image's questions) and prepares the next batch in worker threads while the current one
runs on the device. This script measures what that buys against the loop a user would write, on
the same model object and the same images, in one process:

* evalkit: ``score_step(step_dir, [metric], device, batch_size=B)`` into a step folder with no
  stored scores, so every image is read, hash-checked, prepared, scored, appended to the store,
  and the aggregate is computed and written (the whole call is timed).
* naive:   for each image: open, ``metric.prepare``, ``metric.score_batch([item], [prepared])``;
  then ``metric.aggregate`` of the records. For TIFA the naive loop is the reference's: every
  question answered alone (``backend.answer([image], [[question]])``), then the same
  reference-exact scoring and aggregate. TIFA also gets a VQA-only row (evalkit's batched
  ``answer_tifa_questions`` per batch of B images vs one question per call), in questions/s.

Models: by default the demo's tiny random models on CPU (`build_demo_cards`), which checks the
paths and says little about real models. ``--full`` builds random-weight models with the real
architectures from their configs, nothing downloaded: CLIP ViT-L/14, GIT-large (VQAv2 config) +
MPNet-base for TIFA, BLIP ViT-L/16 + BERT-base ImageReward, open_clip ViT-H-14 for HPSv2, and
the FID Inception (the same architecture in both modes). Meant for ``--device cuda``.

Both sides warm up once untimed (lazy imports, kernel selection, FID's reference statistics),
then alternate ``evalkit, naive, evalkit, naive, ...``; medians are reported. On CUDA the device
is synchronised before every clock read. Benchmarks report, they do not assert: the verdict
(evalkit at least as fast as the naive loop) is printed and the exit status is 0 either way;
only when nothing can be measured (``--device cuda`` without CUDA) is it non-zero.

    python bench/metrics_throughput.py                                 # tiny models, CPU, ~1-2 min
    python bench/metrics_throughput.py --device cuda --full --json out/bench/metrics-cuda.json
"""

from __future__ import annotations

import os

# Everything is built from code; nothing may reach the hub (set before transformers imports).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import argparse
import dataclasses
import platform
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from harness import fresh_copy, items_of, run_and_report, versions  # bench/harness.py (scripts run from bench/)
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.generation.checkpoints import ResolveOptions, resolve
from evalkit.generation.generator import GenerateOptions, Generator
from evalkit.generation.protocol import GenerationRequest
from evalkit.metrics.api import ImageItem
from evalkit.metrics.cards import read_card
from evalkit.metrics.context import MetricContext
from evalkit.prompts.sets import PromptSet, load_prompt_set
from evalkit.runtime.devicetime import release_memory, synced_clock
from evalkit.runtime.quiet import quiet_loading

SCHEMA = "evalkit.bench.metrics_throughput/1"
IMPLEMENTATIONS = ("clip_score", "tifa", "imagereward", "hpsv2", "fid")
TARGET_SPEEDUP = 1.0  # evalkit's batched path must not be slower than the naive loop
NOISY_SPREAD = 0.15  # repeats of one side further apart than this: the machine was busy
GENERATION_STEPS = 2  # the images only have to exist; their content does not change scoring cost
SAMPLE_SET = "tifa-v1.0-sample"  # TIFA's shipped questions: 2 prompts, 19 questions, no download
FULL_MODELS = {
    "clip_score": "CLIP ViT-L/14 (random)",
    "tifa": "GIT-large VQAv2 + MPNet-base (random)",
    "imagereward": "BLIP ViT-L/16 + BERT-base ImageReward (random)",
    "hpsv2": "open_clip ViT-H-14 (random)",
    "fid": "Inception-v3 pool3 (random)",
}


class Skip(Exception):
    """A metric that cannot be measured here; the reason is printed and recorded."""


# ---------------------------------------------------------------------------------------------
# Models and cards


def tiny_cards(models: Path, coco: PromptSet) -> dict[str, Path]:
    """The demo's tiny random metric models and cards (what `evalkit demo` scores with)."""
    from evalkit.evaluation.demo import build_demo_cards

    return {read_card(p).implementation: p for p in build_demo_cards(models, list(coco))}


def full_card(impl: str, models: Path, cards: Path, fid_coco: PromptSet, device: torch.device) -> Path:
    """A card for a random-weight model of the real architecture, built from its config."""
    from evalkit.tiny.clip import write_card

    cards.mkdir(parents=True, exist_ok=True)
    folder = models / f"full-{impl}"
    torch.manual_seed(0)
    if impl == "clip_score":
        return write_card(cards / "clip-full.yaml", "clip-full", "clip_score", "coco-10k",
                          {"clip": write_full_clip(folder, device)})
    if impl == "tifa":
        return write_card(cards / "tifa-full.yaml", "tifa-full", "tifa", SAMPLE_SET,
                          {"vqa": write_full_git(folder / "git", device),
                           "sentence": write_full_mpnet(folder / "mpnet", device)},
                          params={"vqa_backend": "git-large", "questions": "sample"})
    if impl == "imagereward":
        return write_card(cards / "imagereward-full.yaml", "imagereward-full", "imagereward", "coco-10k",
                          {"imagereward": write_full_imagereward(folder)})
    if impl == "hpsv2":
        from evalkit.metrics.hpsv2 import HPS_VERSIONS

        return write_card(cards / "hpsv2-full.yaml", "hpsv2-full", "hpsv2", "tifa-v1.0",
                          {"hps": write_full_hps(folder, device)},
                          params={"version": "v2.1", "file": HPS_VERSIONS["v2.1"], "architecture": "ViT-H-14",
                                  "antialias": False, "scale": "cosine"})
    if impl == "fid":
        return fid_card(models, cards / "fid-full.yaml", "fid-full", fid_coco)
    raise Skip(f"no full-size builder for implementation {impl!r}")


def write_full_clip(folder: Path, device: torch.device) -> Path:
    """openai/clip-vit-large-patch14's config; the byte-level test tokenizer stands in for the
    49,408-token BPE (only the embedding table is smaller: same compute per token)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    from evalkit.generation.tokenizer import clip_vocab_size, write_clip_tokenizer

    vocab = clip_vocab_size()
    text = CLIPTextConfig(vocab_size=vocab, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                          num_hidden_layers=12, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
                          bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                              image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    with torch.device(device):
        model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=768))
    model.save_pretrained(str(folder))
    write_clip_tokenizer(folder)
    return folder


def _wordpiece_vocab(specials: list[str], size: int, tail: Sequence[str] = ()) -> dict[str, int]:
    """A WordPiece vocabulary of exactly `size` entries: the test words and characters, padded
    with [unusedN] so the embedding and output layers have the real checkpoint's width."""
    from evalkit.tiny.tifa_models import LETTERS, TIFA_WORDS

    tokens = [*specials, *TIFA_WORDS, *LETTERS, *"?.,'", *(f"##{c}" for c in LETTERS)]
    tokens = list(dict.fromkeys(tokens))
    filler = (f"[unused{i}]" for i in range(size))
    while len(tokens) < size - len(tail):
        tokens.append(next(filler))
    return {t: i for i, t in enumerate([*tokens, *tail])}


def write_full_git(folder: Path, device: torch.device) -> Path:
    """microsoft/git-large-vqav2's config (ViT-L/14 at 420 px, 6-layer 768-wide decoder, 30,522 tokens).

    Random weights never emit [SEP], so every answer would run to the 50-token cap, while the
    real model answers in a word or two; the output bias of [SEP] is raised so decoding stops
    after one token, which keeps the work per question close to the real model's.
    """
    from transformers import BertTokenizer, GitConfig, GitForCausalLM
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    specials = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = BertTokenizer(vocab=_wordpiece_vocab(specials, 30522))
    config = GitConfig(
        vision_config={"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                       "num_hidden_layers": 24, "image_size": 420, "patch_size": 14, "projection_dim": 512},
        vocab_size=30522, hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072,
        max_position_embeddings=1024, bos_token_id=101, eos_token_id=102, pad_token_id=0,
    )
    if (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id) != (101, 102, 0):
        raise Skip("the stand-in GIT tokenizer does not put [CLS]/[SEP]/[PAD] at bert-base-uncased's ids")
    with torch.device(device):
        model = GitForCausalLM(config)
    with torch.no_grad():
        model.output.bias[config.eos_token_id] = 100.0
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    CLIPImageProcessorPil(size={"shortest_edge": 420}, crop_size={"height": 420, "width": 420}).save_pretrained(
        str(folder))
    return folder


def write_full_mpnet(folder: Path, device: torch.device) -> Path:
    """sentence-transformers/all-mpnet-base-v2's config (12 layers, 768 wide, 30,527 tokens)."""
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

    vocab = _wordpiece_vocab(["<s>", "<pad>", "</s>", "[UNK]"], 30527, tail=("<mask>",))
    tokenizer = MPNetTokenizer(vocab=vocab, model_max_length=512)
    tokenizer.save_pretrained(str(folder))
    config = MPNetConfig(vocab_size=30527, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=514, pad_token_id=1)
    with torch.device(device):
        model = MPNetModel(config)
    model.eval().save_pretrained(str(folder))
    return folder


def write_full_imagereward(folder: Path) -> Path:
    """ImageReward v1.0's shapes: BLIP ViT-L/16 at 224, med BERT-base with cross-attention, the
    768-1024-128-64-16-1 head; the original layout, converted as a user converts the real one.
    The test tokenizer stands in for bert-base-uncased (a smaller embedding table only)."""
    from evalkit.metrics.imagereward_convert import convert_imagereward
    from evalkit.tiny.imagereward import TinyImageRewardConfig, write_tiny_original

    config = TinyImageRewardConfig(image_size=224, patch_size=16, vit_width=1024, vit_layers=24, vit_heads=16,
                                   text_width=768, text_layers=12, text_heads=12, text_intermediate=3072,
                                   max_positions=512, head_widths=(768, 1024, 128, 64, 16, 1), embed_dim=256)
    original = write_tiny_original(folder / "original", seed=0, config=config)
    converted = convert_imagereward(original.pt, original.med_config, folder / "converted",
                                    tokenizer=original.tokenizer)
    (original.pt).unlink()  # 1.9 GB the metric never reads
    return converted


def write_full_hps(folder: Path, device: torch.device) -> Path:
    """open_clip ViT-H-14 (open_clip ships its config and tokenizer), saved in float16 as the
    official HPS_v2.1_compressed.pt is; the metric loads it into float32 as the reference does."""
    from evalkit.metrics.hpsv2 import HPS_VERSIONS, build_open_clip

    with torch.device(device):
        model = build_open_clip("ViT-H-14")
    state = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state}, folder / HPS_VERSIONS["v2.1"])
    return folder


def fid_card(models: Path, path: Path, name: str, coco: PromptSet) -> Path:
    """Random-weight Inception (the real architecture) and synthetic COCO references, as the demo's."""
    from evalkit.evaluation.demo import coco_dir
    from evalkit.tiny.clip import write_card
    from evalkit.tiny.fid import write_random_inception, write_synthetic_coco

    weights = models / "random-inception.pth"
    if not weights.is_file():
        write_random_inception(weights)
    write_synthetic_coco(coco_dir(models), list(coco))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_card(path, name, "fid", "coco-10k", {},
                      params={"resize": "tf1-bilinear", "weights": str(weights), "n": len(coco),
                              "label": f"FID-{len(coco)}", "kid_subsets": 10, "kid_subset_size": len(coco) // 2,
                              "kid_seed": 0}, higher_is_better=False)


# ---------------------------------------------------------------------------------------------
# Images


@dataclass(frozen=True)
class Workload:
    """The images one group of metrics scores: prompt sets, generated into a step folder of their own."""

    name: str
    sets: tuple[PromptSet, ...]
    images_per_prompt: int = 1


def workloads(args: argparse.Namespace) -> dict[str, Workload]:
    """Per implementation. FID and TIFA get fewer images than the cheap metrics on the tiny models
    (Inception costs the same at any size; the tiny random VQA model answers up to 50 tokens)."""
    coco, tifa = load_prompt_set("coco-10k"), load_prompt_set("tifa-v1.0")
    main = Workload("main", (coco.head(args.images), tifa.head(args.images)))
    sample = load_prompt_set(SAMPLE_SET)
    return {"clip_score": main, "imagereward": main, "hpsv2": main,
            "fid": Workload("fid", (coco.head(args.fid_images),)),
            "tifa": Workload("tifa", (sample,), images_per_prompt=args.tifa_images // len(sample))}


def generate_images(work: Path, jobs: Sequence[Workload], resolution: int, device: str) -> dict[str, Path]:
    """Step folders of real generator output (tiny SD, few steps), one per workload."""
    from evalkit.tiny.sd import build_tiny_sd

    sd_dir = work / "tiny-sd"
    if not (sd_dir / "model_index.json").is_file():
        build_tiny_sd(seed=0, resolution=resolution, work=work / "tiny-sd-tokenizer").save_pretrained(str(sd_dir))
    ref = resolve(str(sd_dir), ResolveOptions())[0]
    steps: dict[str, Path] = {}
    for job in jobs:
        if job.name in steps:
            continue
        request = GenerationRequest(steps=GENERATION_STEPS, images_per_prompt=job.images_per_prompt,
                                    resolution=resolution, device=device)
        options = GenerateOptions(out=work / job.name, batch_size=16, quiet=True)
        steps[job.name] = Generator(request, options).run_one(ref, list(job.sets)).step_dir
    return steps


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


# ---------------------------------------------------------------------------------------------
# Timed sides


@dataclass
class Comparison:
    """One row of the table: evalkit against its baseline on the same work."""

    metric: str
    model: str
    unit: str  # "img/s" or "q/s"
    work: int  # images, or questions
    evalkit: list[float] = field(default_factory=list)  # seconds per repeat
    naive: list[float] = field(default_factory=list)
    # evalkit's cost per call with nothing left to score (a re-run: manifests, prompt set, store,
    # aggregate, summary); the part of `evalkit` that does not shrink per image with batching.
    fixed: list[float] = field(default_factory=list)
    parity: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        ours, base = statistics.median(self.evalkit), statistics.median(self.naive)
        paired = [b / o for o, b in zip(self.evalkit, self.naive, strict=True)]
        spread = max(max(s) / min(s) - 1.0 for s in (self.evalkit, self.naive))
        return {"evalkit_seconds_median": ours, "naive_seconds_median": base,
                "evalkit_per_second": self.work / ours, "naive_per_second": self.work / base,
                "speedup": base / ours, "speedup_paired_median": statistics.median(paired), "spread": spread,
                "evalkit_fixed_seconds_median": statistics.median(self.fixed) if self.fixed else None}


def alternate(sides: dict[str, Callable[[], Any]], repeats: int, device: torch.device,
              label: str) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """One untimed warm-up of each side, then `repeats` timed rounds, sides alternating; returns
    the seconds per side and each side's last return value (for the parity check)."""
    last: dict[str, Any] = {name: fn() for name, fn in sides.items()}
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(repeats):
        for name, fn in sides.items():
            t0 = synced_clock(device)
            last[name] = fn()
            seconds[name].append(synced_clock(device) - t0)
        print(f"  {label} repeat {i + 1}/{repeats}: " + ", ".join(f"{n} {s[-1]:.3f} s" for n, s in seconds.items()),
              flush=True)
    return seconds, last


def measure_metric(impl: str, card: Path, context: MetricContext, step_dir: Path, work: Path, batch_size: int,
                   repeats: int, device: torch.device, model: str) -> list[Comparison]:
    from evalkit.metrics.registry import create
    from evalkit.scoring.engine import score_step

    metric = create(str(card), context)
    t0 = time.perf_counter()
    metric.setup(device)  # loading is not scoring: neither side pays for it
    print(f"{impl}: {model}; loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    items = items_of(step_dir, metric)
    runs = work / "runs" / impl
    # One unscored copy per call (warm-up + repeats), made before any clock starts.
    pending = [fresh_copy(step_dir, runs / f"evalkit-{i}") for i in range(repeats + 1)]
    scored: list[Path] = []

    def evalkit_side() -> dict[str, Any]:
        scored.append(pending.pop())
        result = score_step(scored[-1], [metric], device, batch_size=batch_size, quiet=True)[0]
        if result.scored != len(items):
            raise RuntimeError(f"evalkit scored {result.scored} of {len(items)} images; the copy was not fresh")
        return result.values

    def evalkit_fixed() -> dict[str, Any]:  # the same folder again: every record is reused
        result = score_step(scored[-1], [metric], device, batch_size=batch_size, quiet=True)[0]
        if result.scored:
            raise RuntimeError(f"a re-run scored {result.scored} images again instead of reusing them")
        return result.values

    def naive_side() -> dict[str, Any]:
        records = []
        for item in items:
            prepared = metric.prepare(item, load_rgb(item.path))
            for image_records in metric.score_batch([item], [prepared]):
                records.extend(image_records)
        return metric.aggregate(records)

    rows = []
    if impl == "tifa":
        backend, embed = tifa_models(card, device)
        rows += measure_vqa(metric, backend, items, batch_size, repeats, device, model)
        naive_side = tifa_naive_side(metric, backend, embed, items)  # the reference's per-question loop
        work_count, unit = sum(len(metric.questions()[it.prompt.id]) for it in items), "q/s"
    else:
        work_count, unit = len(items), "img/s"
    seconds, last = alternate({"evalkit": evalkit_side, "fixed": evalkit_fixed, "naive": naive_side}, repeats,
                              device, impl)
    row = Comparison(impl, model, unit, work_count, seconds["evalkit"], seconds["naive"], seconds["fixed"])
    row.parity = {"evalkit_value": last["evalkit"]["value"], "naive_value": last["naive"]["value"],
                  "abs_diff": abs(last["evalkit"]["value"] - last["naive"]["value"])}
    shutil.rmtree(runs, ignore_errors=True)
    return [row, *rows]  # the models go with this frame; the caller then releases device memory


def tifa_naive_side(metric: Any, backend: Any, embed: Any, items: list[ImageItem]) -> Callable[[], Any]:
    """The TIFA reference's loop, end to end: one question per VQA call, then the same scoring."""
    from evalkit.metrics.tifa.scoring import aggregate, score_questions

    questions = metric.questions()

    def run() -> dict[str, Any]:
        records = []
        for item in items:
            image, qs = load_rgb(item.path), questions[item.prompt.id]
            answers = [backend.answer([image], [[q.question]], [[q.choices]])[0][0] for q in qs]
            records += score_questions(qs, answers, embed)
        return {"value": float(aggregate(records).tifa_average)}

    return run


def tifa_models(card: Path, device: torch.device) -> tuple[Any, Any]:
    """The card's VQA and sentence models, loaded through evalkit's public loaders (same files
    as the metric's own copy, so the same weights)."""
    from evalkit.metrics.registry import BUILTINS
    from evalkit.metrics.tifa.answers import load_sentence_embedder
    from evalkit.metrics.tifa.vqa import load_vqa_backend

    parsed = read_card(card)
    with quiet_loading():
        backend = load_vqa_backend(BUILTINS["tifa"].values(parsed)["vqa_backend"], parsed.model("vqa").source,
                                   device=device)
        return backend, load_sentence_embedder(parsed.model("sentence").source, device=device)


def batched_answers(vqa: Any, images: list[Image.Image], questions: list[Any],
                    batch_size: int) -> Callable[[], list[str]]:
    """evalkit's VQA side: `answer_tifa_questions` per batch of `batch_size` images, answers in order."""
    from evalkit.metrics.tifa.vqa import answer_tifa_questions

    def run() -> list[str]:
        answers: list[str] = []
        for start in range(0, len(images), batch_size):
            answers += answer_tifa_questions(vqa, images[start:start + batch_size], questions[start:start + batch_size])
        return answers

    return run


def measure_vqa(metric: Any, backend: Any, items: list[ImageItem], batch_size: int, repeats: int,
                device: torch.device, model: str) -> list[Comparison]:
    """VQA alone, in questions/s: evalkit's batched call per batch of images vs one question per call."""
    images = [load_rgb(it.path) for it in items]
    questions = [metric.questions()[it.prompt.id] for it in items]
    batched = batched_answers(backend, images, questions, batch_size)

    def one_by_one() -> list[str]:
        return [backend.answer([image], [[q.question]], [[q.choices]])[0][0]
                for image, qs in zip(images, questions, strict=True) for q in qs]

    seconds, last = alternate({"evalkit": batched, "naive": one_by_one}, repeats, device, "tifa/vqa")
    row = Comparison("tifa/vqa", model, "q/s", sum(len(qs) for qs in questions), seconds["evalkit"], seconds["naive"])
    same = sum(a == b for a, b in zip(last["evalkit"], last["naive"], strict=True))
    row.parity = {"answers_equal": same, "answers": len(last["naive"])}
    return [row, *measure_git_cache(backend, images, questions, batch_size, repeats, device, model)]


def measure_git_cache(backend: Any, images: list[Image.Image], questions: list[Any], batch_size: int, repeats: int,
                      device: torch.device, model: str) -> list[Comparison]:
    """GIT's image tokens through the decoder once per image (the default) against tiled over every
    question row (`cache_image_tokens=False`, what GIT's own forward does), both batched, in q/s."""
    from evalkit.metrics.tifa.vqa_git import GitVQA

    if not isinstance(backend, GitVQA) or not backend.caches:
        return []
    tiled = dataclasses.replace(backend, cache_image_tokens=False)

    seconds, last = alternate({"evalkit": batched_answers(backend, images, questions, batch_size),
                               "naive": batched_answers(tiled, images, questions, batch_size)},
                              repeats, device, "tifa/git-cache")
    row = Comparison("tifa/git-cache", model, "q/s", sum(len(qs) for qs in questions), seconds["evalkit"],
                     seconds["naive"])
    same = sum(a == b for a, b in zip(last["evalkit"], last["naive"], strict=True))
    row.parity = {"answers_equal": same, "answers": len(last["naive"])}
    return [row]


def measure_one_pass(impls: Sequence[str], cards: dict[str, Path], context: MetricContext, step_dir: Path,
                     work: Path, batch_size: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """Several metrics of one step folder in one ``score_step`` call, which reads, hashes and decodes each
    PNG once for all of them (scoring/onepass.py), against one call per metric, which does it once per
    metric (what ``evalkit score`` did before). Same models, same images, same batches: the values
    must be equal, and are reported."""
    from evalkit.metrics.registry import create
    from evalkit.scoring.engine import score_step

    metrics = [create(str(cards[impl]), context) for impl in impls]
    for metric in metrics:
        metric.setup(device)
    runs = work / "runs" / "one-pass"
    pending = [fresh_copy(step_dir, runs / f"copy-{i}") for i in range(2 * (repeats + 1))]

    def one_call() -> dict[str, Any]:
        return {r.metric: r.values for r in score_step(pending.pop(), metrics, device, batch_size=batch_size,
                                                        quiet=True)}

    def per_metric_calls() -> dict[str, Any]:
        step = pending.pop()
        return {r.metric: r.values for m in metrics
                for r in score_step(step, [m], device, batch_size=batch_size, quiet=True)}

    seconds, last = alternate({"one_call": one_call, "per_metric_calls": per_metric_calls}, repeats, device,
                              "one pass")
    shutil.rmtree(runs, ignore_errors=True)
    ours, base = statistics.median(seconds["one_call"]), statistics.median(seconds["per_metric_calls"])
    return {"metrics": list(impls), "images": sum(len(items_of(step_dir, m)) for m in metrics),
            "files": len({it.file for m in metrics for it in items_of(step_dir, m)}),
            "runs": seconds, "one_call_seconds_median": ours, "per_metric_calls_seconds_median": base,
            "speedup": base / ours, "values_equal": last["one_call"] == last["per_metric_calls"]}


# ---------------------------------------------------------------------------------------------
# Report


def table(report: dict[str, Any]) -> str:
    lines = [f"{'metric':<15}{'model':<31}{'work':>5}{'evalkit':>12}{'naive':>12}{'speedup':>9}{'fixed s':>9}"
             "  parity (evalkit vs naive)",
             f"{'':<15}{'':<31}{'':>5}{'(median)':>12}{'(median)':>12}{'':>9}{'(median)':>9}"]
    for row in report["rows"]:
        s, p = row["summary"], row["parity"]
        unit = row["unit"]
        parity = (f"{p['answers_equal']}/{p['answers']} answers equal" if "answers" in p
                  else f"|value diff| {p['abs_diff']:.1e}")
        fixed = "-" if s["evalkit_fixed_seconds_median"] is None else f"{s['evalkit_fixed_seconds_median']:.3f}"
        lines.append(f"{row['metric']:<15}{row['model'][:30]:<31}{row['work']:>5}"
                     f"{s['evalkit_per_second']:>8.1f} {unit:<3}{s['naive_per_second']:>8.1f} {unit:<3}"
                     f"{s['speedup']:>8.2f}x{fixed:>9}  {parity}")
    for skipped in report["skipped"]:
        lines.append(f"{skipped['metric']:<12}SKIPPED: {skipped['reason']}")
    one = report.get("one_pass")
    if one:
        lines.append(f"one pass ({'+'.join(one['metrics'])}, {one['images']} images in {one['files']} files): "
                     f"one call {one['one_call_seconds_median']:.3f} s vs a call per metric "
                     f"{one['per_metric_calls_seconds_median']:.3f} s = {one['speedup']:.2f}x; "
                     f"values {'equal' if one['values_equal'] else 'DIFFER'}")
    lines.append(f"{report['verdict']}: slowest speedup {report['min_speedup']:.2f}x vs target >= "
                 f"{TARGET_SPEEDUP:.2f}x (evalkit's batched scoring not slower than the naive loop)")
    if report["noisy"]:
        lines.append(f"WARNING: repeats of one side differ by more than {NOISY_SPREAD:.0%}; the machine was busy "
                     "and the ratios are unreliable: rerun, or raise --repeats")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="metric scoring throughput: evalkit vs a naive per-image loop")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--full", action="store_true",
                   help="full-size random-weight architectures (CLIP ViT-L/14, GIT-large, BLIP-L ImageReward, "
                        "open_clip ViT-H-14, Inception) instead of the tiny demo models; meant for --device cuda")
    p.add_argument("--metrics", default=",".join(IMPLEMENTATIONS),
                   help=f"comma-separated implementations (default: all of {', '.join(IMPLEMENTATIONS)})")
    p.add_argument("--images", type=int, default=0,
                   help="images for CLIP score, ImageReward and HPSv2 (default: 64 tiny, 128 --full)")
    p.add_argument("--fid-images", type=int, default=0, help="images for FID (default: 16 tiny, 128 --full)")
    p.add_argument("--tifa-images", type=int, default=0,
                   help="TIFA's images, an even number: its 2 sample prompts (19 questions) x N/2 images each "
                        "(default: 4 tiny, whose random VQA model answers up to 50 tokens per question; 32 --full)")
    p.add_argument("--batch-size", type=int, default=32, help="evalkit's score batch size (the CLI's default)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per side (interleaved)")
    p.add_argument("--resolution", type=int, default=0,
                   help="generated image size in pixels (default: 32 tiny, 512 --full: the metrics resize it)")
    p.add_argument("--json", type=Path, default=None, help="also write the full report here")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where models and images go (default: a temporary folder, removed after)")
    args = p.parse_args(argv)
    args.metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(args.metrics) - set(IMPLEMENTATIONS))
    if unknown or not args.metrics:
        p.error(f"--metrics: unknown {unknown}; choose from {', '.join(IMPLEMENTATIONS)}")
    args.images = args.images or (128 if args.full else 64)
    args.fid_images = args.fid_images or (128 if args.full else 16)
    args.tifa_images = args.tifa_images or (32 if args.full else 4)
    args.resolution = args.resolution or (512 if args.full else 32)
    if args.images < 1:
        p.error("--images must be at least 1")
    if args.fid_images < 4:
        p.error("--fid-images must be at least 4 (FID's covariance and KID need several)")
    if args.tifa_images < 2 or args.tifa_images % 2:
        p.error("--tifa-images must be an even number >= 2 (TIFA's two sample prompts share them)")
    if args.resolution % 8:
        p.error("--resolution must be a multiple of 8")
    for name in ("batch_size", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    device = GenerationRequest(device=args.device).torch_device()  # evalkit's rules: cuda without CUDA is an error
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")  # FID reference statistics stay in the work folder
    torch.manual_seed(0)
    print(f"evalkit metric throughput bench: {'full-size' if args.full else 'tiny'} models, device={device}, "
          f"{args.images} images per metric ({args.fid_images} for FID, {args.tifa_images} for TIFA) "
          f"at {args.resolution} px, "
          f"batch {args.batch_size}, "
          f"{args.repeats} repeats, threads={torch.get_num_threads()}", flush=True)
    if args.full and device.type != "cuda":
        print("note: --full on CPU builds and runs models of 0.1-1 B parameters; expect minutes", flush=True)
    jobs = workloads(args)
    chosen = {impl: jobs[impl] for impl in args.metrics}
    fid_coco = jobs["fid"].sets[0]  # the COCO prompts FID's synthetic references are written for
    t = time.perf_counter()
    with quiet_loading(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steps = generate_images(work / "generated", list(chosen.values()), args.resolution, str(device))
        cards = {} if args.full else tiny_cards(work / "models", fid_coco)
    unique = {j.name: j for j in chosen.values()}.values()
    made = sum(len(s) * job.images_per_prompt for job in unique for s in job.sets)
    print(f"generated {made} images in {time.perf_counter() - t:.1f} s", flush=True)
    from evalkit.evaluation.demo import coco_dir

    context = MetricContext(coco_images=coco_dir(work / "models"))
    rows: list[Comparison] = []
    skipped: list[dict[str, str]] = []
    shared = [impl for impl in args.metrics if chosen[impl].name == "main"]  # one step folder: the one-pass row
    for impl in args.metrics:
        model = FULL_MODELS[impl] if args.full else f"tiny demo card ({impl})"
        try:
            if args.full:
                t = time.perf_counter()
                with quiet_loading(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cards[impl] = full_card(impl, work / "models", work / "cards", fid_coco, device)
                print(f"{impl}: built {model} in {time.perf_counter() - t:.1f} s", flush=True)
            rows += measure_metric(impl, cards[impl], context, steps[chosen[impl].name], work, args.batch_size,
                                   args.repeats, device, model)
        except (Skip, EvalkitError, OSError, ImportError) as e:  # one metric's problem must not hide the others
            reason = e.one_line() if isinstance(e, EvalkitError) else f"{type(e).__name__}: {e}"
            print(f"{impl}: SKIPPED ({reason})", flush=True)
            skipped.append({"metric": impl, "reason": reason})
        finally:
            if impl not in shared:  # kept for the one-pass row below
                shutil.rmtree(work / "models" / f"full-{impl}", ignore_errors=True)  # GBs per full model
            release_memory(device)
    one_pass = None
    measured = [impl for impl in shared if impl in cards and impl not in {s["metric"] for s in skipped}]
    if len(measured) >= 2:
        try:
            one_pass = measure_one_pass(measured, cards, context, steps["main"], work, args.batch_size, args.repeats,
                                        device)
        finally:
            for impl in measured:
                shutil.rmtree(work / "models" / f"full-{impl}", ignore_errors=True)
            release_memory(device)
    if not rows:
        raise EvalkitError("no metric could be measured", "see the SKIPPED lines above")
    out_rows = [{"metric": r.metric, "model": r.model, "unit": r.unit, "work": r.work,
                 "runs": {"evalkit": r.evalkit, "naive": r.naive, "evalkit_fixed": r.fixed}, "summary": r.summary(),
                 "parity": r.parity}
                for r in rows]
    min_speedup = min(r["summary"]["speedup"] for r in out_rows)
    return {
        "schema": SCHEMA,
        "config": {"full": args.full, "device": str(device), "metrics": args.metrics, "images": args.images,
                   "fid_images": args.fid_images, "tifa_images": args.tifa_images,
                   "resolution": args.resolution, "batch_size": args.batch_size, "repeats": args.repeats,
                   "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                   "platform": platform.platform(),
                   "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                   "versions": versions(("evalkit", "torch", "transformers", "open_clip_torch", "torch-fidelity"))},
        "rows": out_rows,
        "skipped": skipped,
        "one_pass": one_pass,
        "min_speedup": min_speedup,
        "target_speedup": TARGET_SPEEDUP,
        "verdict": "PASS" if min_speedup >= TARGET_SPEEDUP else "FAIL",
        "noisy": any(r["summary"]["spread"] > NOISY_SPREAD for r in out_rows),
    }


def main(argv: Sequence[str] | None = None) -> int:
    return run_and_report(parse_args(argv), run, table)


if __name__ == "__main__":
    sys.exit(main())
