"""`evalkit demo`: the whole job on tiny random models, on any machine, with no downloads.

It builds the same tiny fixtures the tests use — a released-model-style pipeline folder, a
training output folder with checkpoint-100/200/300 and tiny metric models — and runs the
real generation and scoring paths on a slice of tifa-v1.0 and coco-10k, writing exactly
what a real run writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from evalkit.generation.checkpoints import ResolveOptions, resolve
from evalkit.generation.generator import GenerateOptions
from evalkit.generation.protocol import GenerationRequest
from evalkit.metrics.context import MetricContext
from evalkit.options import RunOptions
from evalkit.prompts.sets import Prompt, load_prompt_set
from evalkit.results.run import read_run
from evalkit.runtime.quiet import quiet_loading
from evalkit.stepdir import StepDir

if TYPE_CHECKING:
    from evalkit.evaluation.evaluator import StepOutcome
    from evalkit.generation.checkpoints import CheckpointRef
    from evalkit.metrics.api import Metric

DEMO_PROMPTS = 8  # per prompt set
DEMO_BATCH = 8
DEMO_JUDGE_RESAMPLES = 200  # the judge report's bootstrap (the CLI's default is 1000)
BANNER = ("evalkit demo: the models below are tiny and RANDOM (built locally, no downloads). "
          "Their images are noise-like and any score of them is meaningless; the point is the pipeline.")


def build_demo_models(models: Path) -> tuple[Path, Path]:
    """A pipeline folder and a training folder; rebuilt only when missing."""
    from evalkit.tiny.sd import build_tiny_sd
    from evalkit.tiny.training import write_training_folder

    pipeline_dir = models / "tiny-sd"
    training_dir = models / "tiny-sd-train"
    if not (pipeline_dir / "model_index.json").is_file():
        build_tiny_sd(seed=0).save_pretrained(str(pipeline_dir))
    if not (training_dir / "checkpoint-300" / "unet_ema" / "config.json").is_file():
        write_training_folder(training_dir, build_tiny_sd(seed=1))
    return pipeline_dir, training_dir


def build_demo_cards(models: Path, coco_prompts: list[Prompt]) -> list[Path]:
    """Metric cards pointing at tiny random metric models (the real cards point at hub ids)."""
    from evalkit.metrics.hpsv2 import HPS_VERSIONS
    from evalkit.tiny.clip import (
        build_tiny_clip,
        write_card,
        write_tiny_aesthetic,
        write_tiny_cmmd,
        write_tiny_pickscore,
    )
    from evalkit.tiny.clip_t5 import write_tiny_clip_t5
    from evalkit.tiny.fid import write_random_inception, write_synthetic_coco
    from evalkit.tiny.hpsv2 import write_tiny_card, write_tiny_checkpoint
    from evalkit.tiny.imagereward import build_tiny_imagereward
    from evalkit.tiny.qwen_vl import write_tiny_qwen_vl
    from evalkit.tiny.tifa_models import write_tiny_git, write_tiny_mpnet

    built: dict[str, Callable[[Path], object]] = {"tiny-clip": build_tiny_clip, "tiny-git": write_tiny_git,
                                                  "tiny-mpnet": write_tiny_mpnet, "tiny-qwen-vl": write_tiny_qwen_vl}
    for name, build in built.items():
        if not (models / name / "config.json").is_file():
            build(models / name)
    imagereward = models / "tiny-imagereward" / "converted"
    if not (imagereward / "head.safetensors").is_file():
        build_tiny_imagereward(imagereward.parent)
    hps = models / "tiny-hpsv2" / HPS_VERSIONS["v2.1"]
    if not hps.is_file():
        write_tiny_checkpoint(hps.parent)
    inception = models / "random-inception.pth"
    if not inception.is_file():
        write_random_inception(inception)
    pickscore = {"model": models / "tiny-pickscore" / "model", "processor": models / "tiny-pickscore" / "processor"}
    if not (pickscore["processor"] / "config.json").is_file():
        write_tiny_pickscore(models / "tiny-pickscore")
    aesthetic_clip = models / "tiny-aesthetic" / "clip"
    aesthetic_head = models / "tiny-aesthetic" / "aesthetic-head.pth"
    if not aesthetic_head.is_file():
        write_tiny_aesthetic(models / "tiny-aesthetic")
    cmmd_clip = models / "tiny-cmmd"
    if not (cmmd_clip / "preprocessor_config.json").is_file():
        write_tiny_cmmd(cmmd_clip)
    clip_t5 = {role: models / "tiny-clip-t5" / role for role in ("model", "tokenizer", "vision")}
    if not (clip_t5["model"] / "model.safetensors").is_file():
        write_tiny_clip_t5(models / "tiny-clip-t5")
    write_synthetic_coco(coco_dir(models), coco_prompts)
    cards = models / "cards"
    cards.mkdir(parents=True, exist_ok=True)
    fid = write_card(cards / "fid-tiny.yaml", "fid-tiny", "fid", "coco-10k", {},
                     params={"resize": "tf1-bilinear", "weights": str(inception), "n": len(coco_prompts),
                             "label": f"FID-{len(coco_prompts)}", "kid_subsets": 10,
                             "kid_subset_size": len(coco_prompts) // 2, "kid_seed": 0},
                     higher_is_better=False)
    return [
        write_card(cards / "clip-tiny.yaml", "clip-tiny", "clip_score", "coco-10k", {"clip": models / "tiny-clip"}),
        # TIFA on the 2-prompt sample set, whose 19 questions ship with evalkit.
        write_card(cards / "tifa-tiny.yaml", "tifa-tiny", "tifa", "tifa-v1.0-sample",
                   {"vqa": models / "tiny-git", "sentence": models / "tiny-mpnet"},
                   params={"vqa_backend": "git", "questions": "sample"}, headline=True),
        write_card(cards / "imagereward-tiny.yaml", "imagereward-tiny", "imagereward", "coco-10k",
                   {"imagereward": imagereward}),
        write_tiny_card(cards / "hpsv2-tiny.yaml", "hpsv2-tiny", hps.parent),
        fid,
        # precision/recall/density/coverage on fid-tiny's features and reference (its records, borrowed)
        write_card(cards / "prdc-tiny.yaml", "prdc-tiny", "prdc", "coco-10k", {},
                   params={"features": str(fid), "value": "precision", "pr_k": 3, "dc_k": 5,
                           "bootstrap_resamples": 50}),
        write_card(cards / "cmmd-tiny.yaml", "cmmd-tiny", "cmmd", "coco-10k", {"clip": cmmd_clip},
                   params={"sigma": 10.0, "scale": 1000.0, "bootstrap_resamples": 50}, higher_is_better=False),
        write_card(cards / "pickscore-tiny.yaml", "pickscore-tiny", "pickscore", "coco-10k", pickscore),
        write_card(cards / "aesthetic-tiny.yaml", "aesthetic-tiny", "aesthetic", "coco-10k", {"clip": aesthetic_clip},
                   params={"head": str(aesthetic_head)}),
        write_card(cards / "vqascore-tiny.yaml", "vqascore-tiny", "vqascore", "tifa-v1.0", clip_t5,
                   params={"backend": "clip-flant5", "dtype": "float32"}),
        write_card(cards / "vqascore-qwen-tiny.yaml", "vqascore-qwen-tiny", "vqascore", "tifa-v1.0",
                   {"model": models / "tiny-qwen-vl"}, params={"backend": "qwen2.5-vl", "dtype": "float32"}),
        # DSG-1k's own questions (shipped with the prompt set), answered by the tiny GIT
        write_card(cards / "dsg-tiny.yaml", "dsg-tiny", "dsg", "dsg-1k", {"vqa": models / "tiny-git"},
                   params={"vqa_backend": "git"}),
    ]


def profile_demo(refs: Sequence[CheckpointRef], runs: Path, request: GenerationRequest) -> int:
    """profile.json for each checkpoint not yet profiled (so run.json and the site's efficiency view have
    its cost): parameters and MACs from its configs, latency at batch 1 timed once per model, as
    `evalkit profile --latency --out` does for a training run whose steps share an architecture."""
    from evalkit.profile import ProtocolCost, profile_spec, spec_from_ref, to_record
    from evalkit.profile.latency import load_checkpoint, measure_latency

    device = request.torch_device()
    timed: dict[str, Any] = {}
    counted: dict[str, Any] = {}  # component configs -> their counts
    written = 0
    for ref in refs:
        folder = StepDir.of(runs, ref.name, ref.step_label)
        if folder.profile_json.is_file():
            continue
        spec = spec_from_ref(ref)
        shape = json.dumps([[c.name, c.class_name, c.config] for c in spec.components], sort_keys=True, default=str)
        if shape not in counted:  # steps of a training run share their configs: count them once
            counted[shape] = profile_spec(spec, (), ProtocolCost(request.steps, request.guidance_scale))
        result = replace(counted[shape], name=spec.name, source=dict(spec.source),
                                     notes=list(counted[shape].notes))
        if ref.name not in timed:
            loaded = load_checkpoint(ref, device, request.torch_dtype(device))
            timed[ref.name] = measure_latency(loaded, request, [1], warmup=False)
            timed[ref.name].weights = "loaded"
            del loaded
        else:
            result.notes.append(f"latency measured once, on another step, for the whole training run {ref.name}")
        result.latency = timed[ref.name]
        record = to_record(result)
        record["step"] = ref.step
        folder.write_profile(record)
        written += 1
    return written


def demo_thresholds_path() -> Path:
    """Margins naming the demo's `*-tiny` cards (the shipped default names the real ones)."""
    from evalkit.runtime.datafiles import shipped_dir

    return shipped_dir("metrics") / "thresholds" / "demo.yaml"


@dataclass(frozen=True)
class DemoCheck:
    new: Path  # step folders
    baseline: Path
    markdown: str
    exit_code: int  # what `evalkit check` exits with: 0 pass, 1 regression


def check_demo(training_steps: Sequence[Path], context: MetricContext, out: Path) -> list[DemoCheck]:
    """`evalkit check` as CI runs it on a new checkpoint: the last step against the previous one and
    against the first, with the demo's thresholds; each Markdown summary is also written to OUT/checks/."""
    from evalkit.gate.check import compare, load_run
    from evalkit.gate.report import markdown
    from evalkit.gate.thresholds import load_thresholds

    thresholds = load_thresholds(demo_thresholds_path())
    new, checks = training_steps[-1], []
    for baseline in (training_steps[-2], training_steps[0]):
        report = compare(load_run(str(baseline), out), load_run(str(new), out), thresholds, context=context)
        text = markdown(report)
        path = out / "checks" / f"{new.name}-vs-{baseline.name}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        checks.append(DemoCheck(new, baseline, text, report.exit_code))
    return checks


def judge_demo(step_dirs: Sequence[Path], runs: Path, metric: Metric, request: GenerationRequest,
               out: Path) -> Path:
    """`evalkit judge validate` on the demo's own TIFA images: the card scores them through its contract and
    the report sets them beside the published judges (TIFA's 800 human-rated images, from the shipped file).
    Nobody rated the demo's images, so their ratings are stand-ins and the report says so at its top."""
    from evalkit.judge.annotations import load_annotations
    from evalkit.judge.report import Validated, build_report, write_report_files
    from evalkit.judge.standin import STAND_IN_NOTE, UnratedImage, write_stand_in_ratings
    from evalkit.judge.validate import JUDGED_SET, image_items, score_images
    from evalkit.results.bootstrap import BootstrapSpec

    texts = load_prompt_set(JUDGED_SET)
    unrated = [UnratedImage(f"{folder.parent.name}_{folder.name}_{row.prompt_id}_{row.k}", row.prompt_id,
                            texts.by_id(row.prompt_id).text, str((folder / row.file).relative_to(runs)))
               for folder in step_dirs for row in StepDir(folder).read_manifest().values()
               if row.prompt_set == metric.info.prompt_set]
    judge = out / "judge"
    rated = write_stand_in_ratings(unrated, judge / "stand-in-ratings.json")
    judged = score_images(metric, image_items(runs, rated.images), rated.images, request.torch_device())
    report = build_report(load_annotations(), rated, [Validated(metric.info.name, metric.info.display_name, judged)],
                          BootstrapSpec(DEMO_JUDGE_RESAMPLES, 0), STAND_IN_NOTE)
    write_report_files(report, judge / "report.md", judge / "report.json")
    return judge / "report.md"


def coco_dir(models: Path) -> Path:
    """Synthetic stand-ins for COCO val2014 images, FID's reference set in the demo."""
    return models / "coco-val2014-synthetic"


def run_demo(out: Path, quiet: bool = False) -> list[StepOutcome]:
    """Generate, score, write run.json per checkpoint, then curves, the leaderboard, the site and two checks;
    torch's threads fitted to the idle cores for the duration (a busy machine is not oversubscribed)."""
    from evalkit.runtime.threads import cpu_threads, torch_threads

    with torch_threads(cpu_threads()) as threads:
        return _run_demo(out, quiet, threads)


def _run_demo(out: Path, quiet: bool, threads: int) -> list[StepOutcome]:
    from evalkit.runtime.extras import EXTRAS, require

    for extra in EXTRAS:  # the demo shows every metric and the site
        require(extra, "evalkit demo")
    from evalkit.evaluation.evaluator import Evaluator
    from evalkit.metrics.registry import create
    from evalkit.publishing.leaderboard import merge_runs
    from evalkit.publishing.site.builder import SiteOptions, build_site

    click.secho(BANNER, fg="yellow")
    click.echo(f"(torch uses {threads} CPU thread(s): the idle cores; OMP_NUM_THREADS overrides)")
    started = time.perf_counter()
    sets = [load_prompt_set("tifa-v1.0").head(DEMO_PROMPTS), load_prompt_set("coco-10k").head(DEMO_PROMPTS),
            load_prompt_set("tifa-v1.0-sample"), load_prompt_set("dsg-1k").head(DEMO_PROMPTS)]
    models, runs = out / "models", out / "runs"
    with quiet_loading():
        pipeline_dir, training_dir = build_demo_models(models)
        context = MetricContext(coco_images=coco_dir(models))
        metrics = [create(str(card), context) for card in build_demo_cards(models, list(sets[1]))]
    options = RunOptions(out=runs, batch_size=DEMO_BATCH, quiet=quiet)  # the protocol: every default
    evaluator = Evaluator(GenerationRequest.of(options), GenerateOptions.of(options), metrics, sets,
                          options.score_batch_size)
    refs = resolve(str(pipeline_dir), ResolveOptions()) + resolve(str(training_dir), ResolveOptions())
    with quiet_loading():
        profile_demo(refs, runs, evaluator.request)
    outcomes = []
    for ref in refs:
        outcome = evaluator.evaluate_ref(ref)
        outcomes.append(outcome)
        entries = read_run(StepDir(outcome.step_dir).run_json).metrics
        shown = ", ".join(f"{name}={_shown(entry.value)}" for name, entry in entries.items())
        result = outcome.generation
        if outcome.skipped or result is None:
            click.echo(f"  {ref.name}@{ref.step_label}: already evaluated; {shown}")
        else:
            click.echo(f"  {ref.name}@{ref.step_label}: {result.generated} generated, {result.reused} reused "
                       f"({result.images_per_second:.1f} img/s); {shown}")
    curves = evaluator.update_curves(training_dir.name)
    board = merge_runs([runs], out / "leaderboard")
    site = build_site(out / "site", out / "leaderboard", [], SiteOptions())
    trained = [o.step_dir for o in outcomes if o.ref.name == training_dir.name]
    checks = check_demo(trained, context, out)
    tifa = next(m for m in metrics if m.info.prompt_set.startswith("tifa"))
    with quiet_loading():
        judged = judge_demo([o.step_dir for o in outcomes], runs, tifa, evaluator.request, out)
    for check in checks:
        verdict = "passes (exit 0)" if check.exit_code == 0 else "regression flagged (exit 1: CI would fail)"
        click.echo(f"\nevalkit check {check.new.relative_to(out)} --baseline {check.baseline.relative_to(out)} "
                   f"--thresholds {demo_thresholds_path().name}: {verdict}")
        if not quiet:
            click.echo(check.markdown)
    click.echo(f"\ndemo finished in {time.perf_counter() - started:.1f}s")
    click.echo(f"  models:      {models}")
    click.echo(f"  images:      {runs}/<model>/<step>/images/<prompt-set>/<prompt-id>_<k>.png")
    click.echo(f"  results:     {runs}/<model>/<step>/run.json (values, 95% CIs, per-category, provenance)")
    click.echo(f"  curves:      {runs / training_dir.name / 'curves'} ({len(curves)} files: csv, json, png, svg)")
    click.echo(f"  leaderboard: {board.folder / 'leaderboard.json'} ({len(board.document['boards'])} board(s))")
    click.echo(f"  site:        {site.out / 'index.html'} (open it in a browser; no server needed)")
    click.echo(f"  checks:      {out / 'checks'} ({len(checks)} Markdown summaries, as `check --markdown` writes)")
    click.echo(f"  judge:       {judged} (`judge validate` on the demo's TIFA images; STAND-IN ratings)")
    return outcomes


def _shown(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
