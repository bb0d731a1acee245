"""Evaluate checkpoints from Python or the CLI: generate → score → run.json → curves, one code path.

`evaluate()` is what a training loop calls in process: it takes a path / hub id, or a diffusers
pipeline object already in memory (fingerprinted from its state dicts, so numbers stay keyed on
the exact weights), and runs the same `Evaluator` that `evalkit run` runs. A step folder whose
run.json already covers the requested metrics with the same fingerprints, prompt sets and
protocol is skipped before anything is loaded: re-running over a training folder costs only the
checkpoints that are new.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from evalkit.errors import EvalkitError
from evalkit.evaluation.merge import Merged
from evalkit.evaluation.watch import CheckpointWatcher, WatchOptions, watch
from evalkit.fileio.pngio import png_is_complete
from evalkit.generation.checkpoints import CheckpointRef, PipelineDir, ResolveOptions, resolve
from evalkit.generation.generator import GenerateOptions, Generator, StepResult, plan_samples
from evalkit.generation.inmemory import native_resolution_of, pipeline_spec, restored, wrap_pipeline
from evalkit.generation.loading import LoadedCheckpoint
from evalkit.generation.protocol import DTYPES, SCHEDULERS, GenerationRequest
from evalkit.generation.seeding import SEED_SCHEME
from evalkit.metrics.api import Metric
from evalkit.options import AUTO, DEFAULTS, IN_PROCESS, NATIVE, RunOptions, check, names_in
from evalkit.prompts.sets import PromptSet
from evalkit.results.comparability import ComparabilityKey, metric_key
from evalkit.results.curves import TrainingCompute, compute_for, save_compute, write_curves
from evalkit.results.model import MetricEntry, RunResult
from evalkit.results.run import read_run
from evalkit.runtime.distributed import Alone, Workers
from evalkit.scoring.engine import MetricResult
from evalkit.stepdir import ModelDir, StepDir, safe_name

PROTOCOL_FIELDS = names_in("protocol")  # what evaluate() takes as **protocol
SOLO = Alone()


@dataclass(frozen=True)
class StepOutcome:
    ref: CheckpointRef
    step_dir: Path
    skipped: bool  # run.json already covered the request; nothing was loaded
    generation: StepResult | None = None
    scores: tuple[MetricResult, ...] = ()
    run_json: Path | None = None
    shard_report: Path | None = None  # a shard's: written when its images and records are done


@dataclass(frozen=True)
class EvalResult:
    """What `evaluate()` returns: the step's run.json (as `read_run` types it) and where things are."""

    name: str
    step: int | None
    step_dir: Path
    skipped: bool
    run: RunResult
    curves: tuple[Path, ...] = ()

    @property
    def values(self) -> dict[str, float | None]:
        """metric name → its value (the metric's own aggregate)."""
        return {name: entry.value for name, entry in self.run.metrics.items()}


class Evaluator:
    """One protocol, metric list and prompt-set list applied to checkpoint after checkpoint."""

    def __init__(self, request: GenerationRequest, options: GenerateOptions, metrics: Sequence[Metric],
                 prompt_sets: Sequence[PromptSet], score_batch_size: int = DEFAULTS.score_batch_size,
                 allow_pickle: bool = DEFAULTS.allow_pickle, workers: Workers = SOLO) -> None:
        check("score_batch_size", score_batch_size)
        self.generator = Generator(request, options, allow_pickle=allow_pickle)
        self.request = request
        self.options = options
        self.metrics = list(metrics)
        self.prompt_sets = list(prompt_sets)
        self.score_batch_size = score_batch_size
        self.allow_pickle = allow_pickle
        self.workers = workers  # a launch's processes: rank 0 merges each step once all shards are done
        self._inputs_checked = False

    def unsharded(self) -> Evaluator:
        """The same request and metric objects (models stay loaded) evaluating whole checkpoints alone."""
        options = replace(self.options, shard_index=0, shard_count=1)
        whole = Evaluator(self.request, options, self.metrics, self.prompt_sets, self.score_batch_size,
                          self.allow_pickle)
        whole._inputs_checked = self._inputs_checked
        return whole

    @property
    def device(self) -> torch.device:
        return self.generator.device

    def evaluate_ref(self, ref: CheckpointRef) -> StepOutcome:
        step_dir = StepDir.of(self.options.out, ref.name, ref.step_label).path
        if self.covered(step_dir, self._expected_for_ref(ref)):
            return StepOutcome(ref, step_dir, skipped=True)
        self.check_inputs()
        started = datetime.now(timezone.utc)
        return self._finish(self.generator.run_one(ref, self.prompt_sets), started)

    def evaluate_loaded(self, loaded: LoadedCheckpoint) -> StepOutcome:
        """A pipeline already in memory: generated with its own device and dtype, state restored after."""
        ref = loaded.ref
        step_dir = StepDir.of(self.options.out, ref.name, ref.step_label).path
        pipe, denoiser = loaded.pipe, loaded.denoiser
        scheduler = pipe.scheduler if self.request.scheduler == NATIVE else None
        expected = self._expected(type(scheduler).__name__ if scheduler is not None else None,
                                  native_resolution_of(loaded), str(denoiser.dtype).removeprefix("torch."))
        if self.covered(step_dir, expected, loaded.fingerprint):
            return StepOutcome(ref, step_dir, skipped=True)
        self.check_inputs()
        started = datetime.now(timezone.utc)
        with restored(pipe):
            result = self.generator.run_loaded(loaded, self.prompt_sets)
        return self._finish(result, started)

    def check_inputs(self) -> None:
        """What every metric needs, checked before the first image is made (once per Evaluator)."""
        if not self._inputs_checked:
            from evalkit.scoring.engine import check_inputs

            check_inputs(self.metrics, self.prompt_sets)
            self._inputs_checked = True

    def update_curves(self, model: str, compute: TrainingCompute | None = None) -> list[Path]:
        return write_curves(ModelDir.of(self.options.out, model).path, compute)

    # -- the skip check: never loads a pipeline ---------------------------------------------------
    def covered(self, step_dir: Path, expected: dict[str, Any] | None, checkpoint_fingerprint: str = "") -> bool:
        """True when run.json already holds every requested metric for exactly this request."""
        folder = StepDir(step_dir)
        if expected is None or not folder.is_complete():
            return False
        try:
            run, generation = read_run(folder.run_json), folder.read_generation()
        except EvalkitError:
            return False
        if any(generation.protocol.get(k) != v for k, v in expected.items()):
            return False
        if checkpoint_fingerprint and generation.checkpoint.fingerprint != checkpoint_fingerprint:
            return False
        generated = {name: s.fingerprint for name, s in generation.prompt_sets.items()}
        if any(generated.get(s.name) != s.fingerprint for s in self.prompt_sets):
            return False
        if not self._images_intact(folder):
            return False
        return all(self._metric_covered(step_dir, run, m, generation.protocol_fingerprint) for m in self.metrics)

    def _images_intact(self, folder: StepDir) -> bool:
        """Every image this request plans is in the manifest and still a whole PNG on disk (an image
        deleted or truncated since run.json was written makes the step evaluated again)."""
        rows = folder.read_manifest()
        planned = plan_samples(self.prompt_sets, self.request)
        return all(s.file in rows and png_is_complete(folder.path / s.file) for s in planned)

    def _metric_covered(self, step_dir: Path, run: RunResult, metric: Metric, protocol_fingerprint: str) -> bool:
        """The run holds the metric under the key this request would give it, and its records still exist."""
        sets = {s.name: s.fingerprint for s in self.prompt_sets}
        name, prompt_set = metric.info.name, metric.info.prompt_set
        if name not in run.metrics or prompt_set not in sets:
            return False
        wanted = ComparabilityKey(protocol_fingerprint, metric.fingerprint(), sets[prompt_set])
        return metric_key(run, name) == wanted and (step_dir / run.metrics[name].records).is_file()

    def _expected_for_ref(self, ref: CheckpointRef) -> dict[str, Any] | None:
        """The read-back protocol this request would record, from config files alone (None: unknown)."""
        from evalkit.profile.profiler import native_resolution
        from evalkit.profile.sources import read_json, spec_from_ref

        try:
            resolution = self.request.resolution or native_resolution(spec_from_ref(ref))
            native = None
            if self.request.scheduler == NATIVE and isinstance(ref.base, PipelineDir):
                native = str(read_json(ref.base.path / "model_index.json").get("scheduler", [None, None])[1])
        except Exception:  # the skip check only saves work: when the configs cannot tell, evaluate
            return None
        dtype = str(self.request.torch_dtype(self.device)).removeprefix("torch.")
        return self._expected(native, resolution, dtype)

    def _expected(self, native_scheduler: str | None, resolution: int, dtype: str) -> dict[str, Any] | None:
        r = self.request
        scheduler = native_scheduler if r.scheduler == NATIVE else SCHEDULERS[r.scheduler].__name__
        if scheduler is None:
            return None
        return {"scheduler": scheduler, "steps": r.steps, "guidance_scale": float(r.guidance_scale),
                "eta": float(r.eta), "negative_prompt": r.negative_prompt, "seed": r.seed, "seed_scheme": SEED_SCHEME,
                "height": r.resolution or resolution, "width": r.resolution or resolution, "dtype": dtype,
                "images_per_prompt": r.images_per_prompt}

    def _finish(self, result: StepResult, started: datetime) -> StepOutcome:
        if self.options.shard_count > 1:
            return self._finish_shard(result)
        from evalkit.results.assemble import write_run_json
        from evalkit.scoring.engine import score_step

        with StepDir(result.step_dir).lock("score"):
            scores = score_step(result.step_dir, self.metrics, self.device, self.score_batch_size, self.options.quiet)
            seconds = result.seconds if result.reused == 0 else None  # else: the manifest's own timings
            run_json = write_run_json(result.step_dir, scores, self.metrics, started, seconds, device=str(self.device))
        return StepOutcome(result.ref, result.step_dir, False, result, tuple(scores), run_json)

    def _finish_shard(self, result: StepResult) -> StepOutcome:
        """Score this shard's images into its own record files and report it finished; under a launcher,
        rank 0 then merges the step once every rank has reported."""
        from evalkit.metrics.registry import card_file
        from evalkit.results.shards import ShardMetric, ShardReport, write_report
        from evalkit.scoring.engine import score_shard

        index, count = self.options.shard_index, self.options.shard_count
        folder = StepDir(result.step_dir)
        files = [s.file for s in plan_samples(self.prompt_sets, self.request, index, count,
                                              self.options.shard_block)]
        with folder.lock("score", index, count):
            scored = score_shard(result.step_dir, self.metrics, self.device, files, index, count,
                                 self.score_batch_size, self.options.quiet)
            report = ShardReport(index, count, result.checkpoint_fingerprint, result.protocol.fingerprint(),
                                 {s.name: s.fingerprint for s in self.prompt_sets},
                                 {s.metric: ShardMetric(s.fingerprint, s.n_images, card_file(m))
                                  for s, m in zip(scored, self.metrics, strict=True)}, tuple(files),
                                 seconds={"generate": round(result.seconds, 3),
                                          "score": {s.metric: round(s.seconds, 3) for s in scored}})
            report_path = write_report(folder, report)
        if self.workers.count == 1:  # --shard: `evalkit merge` runs once the array has finished
            return StepOutcome(result.ref, result.step_dir, False, result, shard_report=report_path)
        self.workers.barrier()
        if self.workers.rank != 0:
            return StepOutcome(result.ref, result.step_dir, False, result, shard_report=report_path)
        from evalkit.evaluation.merge import merge_step

        merged = merge_step(result.step_dir, self.metrics, self.device, self.options.quiet)
        return StepOutcome(result.ref, result.step_dir, False, result, merged.scores, merged.run_json)


# -- spec / training-folder glue shared by `evalkit run` ------------------------------------------------
def run_spec(evaluator: Evaluator, spec: str, resolve_options: ResolveOptions, *,
             flops_per_step: float = DEFAULTS.flops_per_step, train_batch_size: int = DEFAULTS.train_batch_size,
             split: str = DEFAULTS.split, echo: Callable[[str], None] = print) -> list[StepOutcome]:
    """Evaluate every checkpoint `spec` names (skipping covered ones), then rewrite the curves.

    As one of several processes (a launch's rank, or `--shard i/N`) the checkpoints are shared out
    as `split` says (evaluation.split); the curves are written once, by rank 0 after the last
    barrier, or by `evalkit merge` after an array of `--shard` jobs (shard 0 stores the compute axis).
    """
    refs = resolve(spec, resolve_options)
    index, count = evaluator.options.shard_index, evaluator.options.shard_count
    mine, worker = refs, evaluator
    if count > 1:
        from evalkit.evaluation.split import CHECKPOINTS, choose

        plan = choose(split, len(refs), len(plan_samples(evaluator.prompt_sets, evaluator.request)), count)
        if plan.mode == CHECKPOINTS:
            mine, worker = refs[index::count], evaluator.unsharded()
        if index == 0 and len(refs) > 1:
            echo(f"{len(refs)} checkpoints over {count} processes: split by {plan.mode} (estimated cost "
                 f"{plan.checkpoints_cost:g} by checkpoints, {plan.samples_cost:g} by samples, in images)")
    outcomes = []
    for ref in mine:
        outcomes.append(worker.evaluate_ref(ref))
        echo(describe(outcomes[-1]))
    stepped = [r for r in refs if r.step is not None]
    if not stepped:
        return outcomes
    evaluator.workers.barrier()  # every rank's checkpoints are done before the curves read them
    if index != 0:
        return outcomes
    compute = compute_for(lambda: _ref_spec(stepped[-1]), flops_per_step, train_batch_size)
    if count > 1 and evaluator.workers.count == 1:  # an array of --shard jobs: `evalkit merge` draws the curves
        if compute is not None:
            for model in dict.fromkeys(r.name for r in stepped):
                save_compute(ModelDir.of(evaluator.options.out, model), compute)
        return outcomes
    for model in dict.fromkeys(r.name for r in stepped):
        echo_curves(evaluator.update_curves(model, compute), echo)
    return outcomes


def watch_folder(evaluator: Evaluator, folder: Path, resolve_options: ResolveOptions, options: WatchOptions, *,
                 flops_per_step: float = DEFAULTS.flops_per_step, train_batch_size: int = DEFAULTS.train_batch_size,
                 echo: Callable[[str], None] = print, warn: Callable[[str], None] = print) -> int:
    """Follow a training folder: evaluate each checkpoint-N once it is complete; curves after each.
    Returns the number of polls made."""
    if not folder.is_dir():
        raise EvalkitError(f"--watch needs a training output folder; {folder} is not a folder",
                           "point at the --output_dir of the training run")
    if not resolve_options.base and not (folder / "model_index.json").is_file():
        raise EvalkitError(f"{folder} has no model_index.json (training scripts write it only at the end)",
                           "pass --base PIPELINE_DIR_OR_HUB_ID, the pipeline the run trains from")
    if resolve_options.step >= 0 or evaluator.options.shard_count > 1:
        raise EvalkitError("--watch evaluates whole checkpoints by their own step", "drop --step and --shard")
    if options.poll_seconds <= 0:
        raise EvalkitError(f"--poll-seconds must be positive (got {options.poll_seconds})", "e.g. --poll-seconds 60")
    settle = options.poll_seconds if options.settle_seconds is None else options.settle_seconds
    watcher = CheckpointWatcher(folder, settle, ema=resolve_options.ema)
    computed: list[TrainingCompute | None] = []

    def evaluate_one(step: int, path: Path) -> None:
        ref = resolve(str(path), resolve_options)[0]
        outcome = evaluator.evaluate_ref(ref)
        echo(describe(outcome))
        if not computed:
            computed.append(compute_for(lambda: _ref_spec(ref), flops_per_step, train_batch_size))
        echo_curves(evaluator.update_curves(ref.name, computed[0]), echo)

    return watch(watcher, evaluate_one, options, warn)


def _ref_spec(ref: CheckpointRef) -> Any:
    from evalkit.profile.sources import spec_from_ref

    return spec_from_ref(ref)


def describe(outcome: StepOutcome) -> str:
    """What the CLI prints for one checkpoint (the `score` command's format for the numbers)."""
    label = f"{outcome.ref.name}@{outcome.ref.step_label}"
    if outcome.skipped:
        return f"{label}: already evaluated, run.json covers this request -> {outcome.step_dir}"
    gen = outcome.generation
    lines = []
    if gen is not None:
        lines.append(f"{label}: {gen.generated} generated, {gen.reused} reused of {gen.planned} "
                     f"({gen.images_per_second:.2f} img/s) -> {gen.step_dir}")
    if outcome.shard_report is not None:
        lines.append(f"{label}: shard finished -> {outcome.shard_report} (merged into run.json once every shard "
                     "has finished)")
    run = read_run(outcome.run_json) if outcome.run_json is not None else None
    entries = run.metrics if run is not None else {}
    lines += [metric_line(outcome.step_dir, score, entries.get(score.metric)) for score in outcome.scores]
    if run is not None:
        lines += [f"{outcome.step_dir}: results -> {outcome.run_json}", *nonfinite_lines(outcome.step_dir, run)]
    return "\n".join(lines)


def nonfinite_lines(step_dir: Path, run: RunResult) -> list[str]:
    """The warning `run` and `score` print when run.json records NaN/inf output (empty when clean)."""
    if not run.nonfinite:
        return []
    return [f"{step_dir}: warning: {run.nonfinite.describe()} — recorded in run.json; `evalkit check` fails on it "
            "unless --allow-nonfinite"]


def metric_line(step_dir: Path, score: MetricResult, entry: MetricEntry | None) -> str:
    """One scored metric as `evalkit run` and `evalkit score` print it: value [95% interval] and counts."""
    low, high = entry.ci95 if entry is not None else (None, None)
    shown = _number(entry.value if entry is not None else score.values.get("value"))
    if low is not None and high is not None:
        shown += f" [{_number(low)}, {_number(high)}]"
    return f"{step_dir}: {score.metric} = {shown} (n={score.n_images}; {score.scored} scored, {score.reused} reused)"


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def describe_merge(merged: Merged) -> list[str]:
    """What `evalkit merge` prints for one step folder (the `run` command's format)."""
    run = read_run(merged.run_json)
    return [f"{merged.step_dir}: merged {merged.shards} shards",
            *(metric_line(merged.step_dir, s, run.metrics.get(s.metric)) for s in merged.scores),
            f"{merged.step_dir}: results -> {merged.run_json}", *nonfinite_lines(merged.step_dir, run)]


def echo_curves(paths: list[Path], echo: Callable[[str], None]) -> None:
    if paths:
        metrics = sorted({p.stem for p in paths})
        echo(f"curves: {paths[0].parent} ({', '.join(metrics)})")


# -- the Python API ----------------------------------------------------------------------------------
def evaluate(pipeline: Any, *, metrics: str | Sequence[str | Metric], step: int | None = None,
             out: str | Path = IN_PROCESS.out, prompts: str | Sequence[str | PromptSet] | None = None,
             name: str = IN_PROCESS.name, limit: int = IN_PROCESS.limit, subset: str = IN_PROCESS.subset,
             base: str = IN_PROCESS.base, revision: str = IN_PROCESS.revision, ema: bool = IN_PROCESS.ema,
             batch_size: int | str = IN_PROCESS.batch_size, score_batch_size: int = IN_PROCESS.score_batch_size,
             allow_pickle: bool = IN_PROCESS.allow_pickle, flops_per_step: float = IN_PROCESS.flops_per_step,
             train_batch_size: int = IN_PROCESS.train_batch_size, curves: bool = True, quiet: bool = IN_PROCESS.quiet,
             compile_denoiser: str = IN_PROCESS.compile_denoiser, **protocol: Any) -> EvalResult:
    """Evaluate one checkpoint: generate, score, write run.json and (for a training step) the curves.

    `pipeline` is a pipeline folder, hub id, single file (with `base`), checkpoint-N folder or a
    training folder (with `step`) — or a diffusers pipeline object in memory (a training loop's).
    `metrics` are names, card files or Metric objects (pass objects to keep their models loaded
    between calls). `prompts` default to the sets the metrics score. The other keywords are the
    options of evalkit.options.RunOptions (the CLI's flags, with the same defaults except a fixed
    `batch_size`, `quiet` and `compile_denoiser` off); protocol overrides are its protocol fields: scheduler, steps,
    guidance_scale, seed, resolution, dtype, device, negative_prompt, images_per_prompt, eta. A
    step already covered by its run.json is not redone.
    """
    options = _options(protocol, out=Path(out), name=name, limit=limit, subset=subset, base=base, revision=revision,
                       ema=ema, batch_size=batch_size, score_batch_size=score_batch_size, allow_pickle=allow_pickle,
                       flops_per_step=flops_per_step, train_batch_size=train_batch_size, quiet=quiet,
                       compile_denoiser=compile_denoiser)
    metric_objects = _metrics(metrics)
    sets = options.select(_prompt_sets(prompts, metric_objects))
    request = GenerationRequest.of(options)
    generate_options = GenerateOptions.of(options)
    if isinstance(pipeline, str | Path):
        ref = _one_ref(str(pipeline), ResolveOptions.of(options), step)
        evaluator = Evaluator(request, generate_options, metric_objects, sets, options.score_batch_size,
                              options.allow_pickle)
        outcome = evaluator.evaluate_ref(ref)
        spec_of: Callable[[], Any] = lambda: _ref_spec(ref)  # noqa: E731
    else:
        model = name or safe_name(Path(str(getattr(pipeline, "name_or_path", "") or "pipeline")).name)
        loaded = wrap_pipeline(pipeline, model, step)
        _check_in_place(request, protocol, loaded)
        request = replace(request, device=str(pipeline.device))
        evaluator = Evaluator(request, generate_options, metric_objects, sets, options.score_batch_size,
                              options.allow_pickle)
        outcome = evaluator.evaluate_loaded(loaded)
        spec_of = lambda: pipeline_spec(pipeline, model)  # noqa: E731
    curve_paths: list[Path] = []
    if curves and outcome.ref.step is not None:
        compute = compute_for(spec_of, options.flops_per_step, options.train_batch_size)
        curve_paths = evaluator.update_curves(outcome.ref.name, compute)
    return EvalResult(outcome.ref.name, outcome.ref.step, outcome.step_dir, outcome.skipped,
                      read_run(outcome.step_dir), tuple(curve_paths))


def _check_in_place(request: GenerationRequest, protocol: dict[str, Any], loaded: LoadedCheckpoint) -> None:
    """A pipeline object runs where and how it is; a device or dtype asked for must agree with it."""
    pipe, denoiser = loaded.pipe, loaded.denoiser
    want = request.torch_device() if "device" in protocol and request.device != AUTO else pipe.device
    if want.type != pipe.device.type or want.index not in (None, pipe.device.index):
        raise EvalkitError(f"device={request.device!r} given for a pipeline on {pipe.device}",
                           "move the pipeline with pipe.to(device) instead, or drop device=")
    if request.dtype != AUTO and DTYPES[request.dtype] != denoiser.dtype:
        raise EvalkitError(f"dtype={request.dtype!r} given for a pipeline in {denoiser.dtype}",
                           "convert the pipeline with pipe.to(dtype) instead, or drop dtype=")


def _metrics(metrics: str | Sequence[str | Metric]) -> list[Metric]:
    from evalkit.metrics.registry import create, create_many

    if isinstance(metrics, str):
        return create_many(metrics)
    created = [create(m) if isinstance(m, str) else m for m in metrics]
    if not created:
        raise EvalkitError("metrics= names no metric", "e.g. metrics='clip' (evalkit metrics list)")
    return created


def _prompt_sets(prompts: str | Sequence[str | PromptSet] | None, metrics: Sequence[Metric]) -> list[PromptSet]:
    from evalkit.prompts.sets import load_prompt_set

    if prompts is None or prompts == "":
        names: Sequence[str | PromptSet] = list(dict.fromkeys(m.info.prompt_set for m in metrics))
    elif isinstance(prompts, str):
        names = [p.strip() for p in prompts.split(",") if p.strip()]
    else:
        names = list(prompts)
    return [p if isinstance(p, PromptSet) else load_prompt_set(p) for p in names]


def _options(protocol: dict[str, Any], **options: Any) -> RunOptions:
    """evaluate()'s keywords as RunOptions; a protocol override that is no protocol option is an error."""
    unknown = sorted(set(protocol) - set(PROTOCOL_FIELDS))
    if unknown:
        raise EvalkitError(f"unknown protocol setting(s) {', '.join(unknown)}",
                           f"protocol overrides are: {', '.join(PROTOCOL_FIELDS)}")
    return RunOptions(**options, **protocol)


def _one_ref(spec: str, options: ResolveOptions, step: int | None) -> CheckpointRef:
    refs = resolve(spec, options)
    if len(refs) == 1:
        return refs[0] if step is None else replace(refs[0], step=step)
    if step is None:
        raise EvalkitError(f"{spec} holds {len(refs)} checkpoints; evaluate() takes one",
                           "pass step=N to pick checkpoint-N, or run `evalkit run` on the folder")
    chosen = [r for r in refs if r.step == step]
    if not chosen:
        steps = ", ".join(str(r.step) for r in refs)
        raise EvalkitError(f"{spec} has no checkpoint-{step}", f"its steps are: {steps}")
    return chosen[0]
