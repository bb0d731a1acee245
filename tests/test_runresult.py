"""run.json: schema (golden file), bootstrap intervals against a direct computation, breakdowns, merging."""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from evalkit.fileio.hashing import sha256_bytes
from evalkit.fileio.jsonl import append_rows
from evalkit.metrics.cards import read_card
from evalkit.metrics.clip_score import ClipScore
from evalkit.metrics.context import NO_INPUTS
from evalkit.metrics.tifa.metric import TifaMetric
from evalkit.metrics.tifa.questions import sample_questions
from evalkit.prompts.sets import load_prompt_set
from evalkit.results.assemble import write_run_json
from evalkit.results.bootstrap import (
    BootstrapSpec,
    function_samples,
    interval,
    paired_ratio_difference,
    ratio_interval,
    ratio_samples,
)
from evalkit.results.model import RUN_SCHEMA
from evalkit.results.run import read_run, schema_path
from evalkit.scoring.engine import MetricResult
from evalkit.scoring.store import ScoreStore
from evalkit.tiny.clip import write_card

GOLDEN = Path(__file__).parent / "golden" / "run.json"
VOLATILE = ("provenance",)


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


# --- bootstrap against a direct computation ----------------------------------------------------------------

def direct_ratio_samples(num: np.ndarray, den: np.ndarray, spec: BootstrapSpec) -> np.ndarray:
    """The textbook loop: one resample at a time, drawn from the same seeded generator in the same order."""
    rng = np.random.default_rng(spec.seed)
    out, left = [], spec.resamples
    while left:
        rows = min(128, left)
        draws = rng.integers(0, len(num), size=(rows, len(num)))
        for row in draws:
            out.append(sum(num[i] for i in row) / sum(den[i] for i in row))
        left -= rows
    return np.array(out)


def test_ratio_bootstrap_equals_a_direct_loop():
    rng = np.random.default_rng(7)
    num, den = rng.random(37), rng.integers(1, 4, 37).astype(float)
    spec = BootstrapSpec(resamples=300, seed=3)
    fast = ratio_samples(num, den, spec)
    slow = direct_ratio_samples(num, den, spec)
    np.testing.assert_allclose(fast, slow, rtol=1e-12)
    low, high = ratio_interval(num, den, spec)
    assert (low, high) == pytest.approx(tuple(np.percentile(slow, [2.5, 97.5])), rel=1e-12)
    assert low < num.sum() / den.sum() < high


def test_function_bootstrap_and_paired_difference_use_the_same_draws():
    rng = np.random.default_rng(1)
    values = rng.normal(size=25)
    spec = BootstrapSpec(resamples=200, seed=5)
    means = function_samples(25, lambda idx: float(values[idx].mean()), spec)
    np.testing.assert_allclose(means, ratio_samples(values, np.ones(25), spec), rtol=1e-12)
    shifted = values + 0.5
    paired = paired_ratio_difference((shifted, np.ones(25)), (values, np.ones(25)), spec)
    # Same prompts resampled for both runs: a constant shift has no sampling noise at all.
    assert paired.difference == pytest.approx(0.5)
    assert paired.ci == pytest.approx((0.5, 0.5))
    assert paired.share_above(0.49) == 1.0


def test_interval_ignores_undefined_resamples_and_is_reproducible():
    samples = np.array([np.nan, 1.0, 2.0, 3.0, np.inf])
    assert interval(samples, 0.5) == pytest.approx((1.5, 2.5))
    assert all(math.isnan(v) for v in interval(np.array([np.nan, 1.0]), 0.95))
    num, den = np.arange(10.0), np.ones(10)
    assert ratio_interval(num, den, BootstrapSpec(seed=9)) == ratio_interval(num, den, BootstrapSpec(seed=9))
    assert ratio_interval(num, den, BootstrapSpec(seed=9)) != ratio_interval(num, den, BootstrapSpec(seed=10))


# --- a synthetic but real-format step folder --------------------------------------------------------------

def _step_folder(root: Path) -> Path:
    """generation.json, manifest and PNG bytes for the tifa-v1.0-sample set and 4 coco-10k captions."""
    step = root / "tiny-model" / "200"
    sets = [load_prompt_set("tifa-v1.0-sample"), load_prompt_set("coco-10k").head(4)]
    rows = []
    for pset in sets:
        for prompt in pset:
            data = f"png-bytes-of-{pset.name}-{prompt.id}".encode()
            file = f"images/{pset.name}/{prompt.id}_0.png"
            (step / file).parent.mkdir(parents=True, exist_ok=True)
            (step / file).write_bytes(data)
            rows.append({"prompt_set": pset.name, "prompt_id": prompt.id,
                         "prompt_sha256": sha256_bytes(prompt.text.encode()), "k": 0, "seed": 1, "file": file,
                         "sha256": sha256_bytes(data), "seconds": 0.5, "batch_size": 4})
    append_rows(step / "manifest.jsonl", rows)
    generation = {
        "schema": "evalkit.generation/1",
        "checkpoint": {"name": "tiny-model", "step": 200, "fingerprint": "a" * 64,
                       "pipeline_class": "StableDiffusionPipeline", "source": {"kind": "training_step"}},
        "protocol": {"scheduler": "DDIMScheduler", "steps": 50, "guidance_scale": 7.5, "seed": 0, "width": 32,
                     "height": 32, "dtype": "float32", "negative_prompt": "", "images_per_prompt": 1, "eta": 0.0,
                     "seed_scheme": "evalkit-seed-v1", "device": "cpu", "fingerprint": "b" * 64},
        "prompt_sets": {s.name: {"fingerprint": s.fingerprint, "n": len(s), "version": s.version,
                                 "source": s.source} for s in sets},
        "provenance": {"platform": "test"},
    }
    (step / "generation.json").write_text(json.dumps(generation), encoding="utf-8")
    return step


def _metrics(tmp: Path) -> tuple[TifaMetric, ClipScore]:
    (tmp / "weights.safetensors").write_bytes(b"stand-in weights: run.json records their hash")
    tifa_card = write_card(tmp / "tifa.yaml", "tifa-tiny", "tifa", "tifa-v1.0-sample",
                           {"vqa": tmp, "sentence": tmp}, params={"vqa_backend": "git", "questions": "sample"})
    clip_card = write_card(tmp / "clip.yaml", "clip-tiny", "clip_score", "coco-10k", {"clip": tmp})
    return (TifaMetric(read_card(tifa_card), NO_INPUTS), ClipScore(read_card(clip_card), NO_INPUTS))


def _score_synthetic(step: Path, tifa: TifaMetric, clip: ClipScore) -> list[MetricResult]:
    """Records in the metrics' own format with known values (no model runs: this is about run.json)."""
    from evalkit.scoring.engine import image_items
    from evalkit.stepdir import StepDir

    generation, manifest = StepDir(step).read_generation(), StepDir(step).read_manifest()
    results = []
    for metric, fingerprint in ((tifa, "c" * 64), (clip, "d" * 64)):
        items = image_items(step, generation, manifest, metric.info.prompt_set, metric.info.name)
        records = []
        for i, item in enumerate(items):
            if metric is tifa:
                questions = list(sample_questions()[item.prompt.id])
                records.append([{"prompt_id": item.prompt.id, "question": q.question, "choices": list(q.choices),
                                 "answer": q.answer, "free_form_answer": q.answer,
                                 "chosen": q.answer if j % (i + 2) else q.choices[-1],
                                 "correct": q.answer == (q.answer if j % (i + 2) else q.choices[-1]),
                                 "element": q.element, "element_type": q.element_type}
                                for j, q in enumerate(questions)])
            else:
                records.append([{"value": 0.2 + 0.05 * i}])
        store = ScoreStore(step, metric.info.name, fingerprint)
        store.append(items, records)
        values = metric.aggregate([r for recs in records for r in recs])
        results.append(MetricResult(metric.info.name, fingerprint, values, len(items), len(items), 0, 1.0,
                                    store.path.with_name("x.summary.json")))
    return results


def _masked(run: dict) -> dict:
    out = {k: v for k, v in run.items() if k not in VOLATILE}
    for entry in out["metrics"].values():
        entry["card"] = {k: v for k, v in entry["card"].items() if k not in ("path", "fingerprint")}
        entry["models"] = {role: {k: v for k, v in m.items() if k != "source"}  # a temporary folder
                           for role, m in entry.get("models", {}).items()}
    return out


def test_run_json_matches_the_golden_file_and_the_schema(tmp_path):
    step = _step_folder(tmp_path)
    tifa, clip = _metrics(tmp_path)
    results = _score_synthetic(step, tifa, clip)
    started = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)
    path = write_run_json(step, results, [tifa, clip], started)
    run = json.loads(path.read_text(encoding="utf-8"))
    assert read_run(step).to_json() == run  # the typed model gives back exactly what was written
    validator().validate(run)
    assert run["schema_version"] == RUN_SCHEMA
    assert run["provenance"]["started"] == "2026-11-22T10:00:00+00:00"
    tracked = {"torch", "diffusers", "transformers", "open_clip_torch", "torchmetrics"}
    assert tracked <= set(run["provenance"]["versions"])
    if os.environ.get("EVALKIT_UPDATE_GOLDEN") == "1":  # after a deliberate schema change; review the diff
        GOLDEN.write_text(json.dumps(_masked(run), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert _masked(run) == json.loads(GOLDEN.read_text(encoding="utf-8")), f"{path} differs from {GOLDEN}"


def test_breakdowns_equal_the_metric_aggregates(tmp_path):
    step = _step_folder(tmp_path)
    tifa, clip = _metrics(tmp_path)
    results = _score_synthetic(step, tifa, clip)
    run = read_run(write_run_json(step, results, [tifa, clip], datetime.now(timezone.utc)))
    entry, values = run.metrics["tifa-tiny"], results[0].values
    assert entry.value == values["value"] and entry.n == 2
    for kind, accuracy in values["accuracy_by_type"].items():
        assert entry.by_category["element_type"][kind]["value"] == pytest.approx(accuracy)
    for source, mean in values["by_source"].items():
        assert entry.by_category["source"][source]["value"] == pytest.approx(mean)
        assert entry.by_category["source"][source]["n"] == 1
    clip_entry = run.metrics["clip-tiny"]
    low, high = clip_entry.ci95
    assert low <= clip_entry.value <= high
    units = json.loads((step / clip_entry.units).read_text())
    assert units["prompt_ids"] == sorted(p.id for p in load_prompt_set("coco-10k").head(4))
    assert (step / clip_entry.records).is_file()


def test_rerun_keeps_other_metrics_and_undefined_values_are_null(tmp_path):
    step = _step_folder(tmp_path)
    tifa, clip = _metrics(tmp_path)
    tifa_result, clip_result = _score_synthetic(step, tifa, clip)
    write_run_json(step, [tifa_result], [tifa], datetime.now(timezone.utc))
    write_run_json(step, [clip_result], [clip], datetime.now(timezone.utc))
    run = read_run(step)
    assert set(run.metrics) == {"tifa-tiny", "clip-tiny"}
    # Single-prompt categories have an undefined stdev; strict JSON writes null, never NaN.
    text = (step / "run.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))


def test_garbled_or_foreign_run_json_is_a_clear_error(tmp_path):
    from evalkit.errors import EvalkitError

    (tmp_path / "run.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(EvalkitError, match="unreadable"):
        read_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"schema_version": "other/9"}), encoding="utf-8")
    with pytest.raises(EvalkitError, match="not an evalkit"):
        read_run(tmp_path / "run.json")
    with pytest.raises(EvalkitError, match="does not exist"):
        read_run(tmp_path / "missing")


# --- the one reader: schema-checked at run time, one line naming the field --------------------------------

@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("written")
    step = _step_folder(root)
    tifa, clip = _metrics(root)
    path = write_run_json(step, _score_synthetic(step, tifa, clip), [tifa, clip], datetime.now(timezone.utc))
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["metrics"]["clip-tiny"].pop("fingerprint"), "metrics.clip-tiny.fingerprint is missing"),
    (lambda r: r["metrics"]["clip-tiny"].update(value="high"), "metrics.clip-tiny.value is not a number or null"),
    (lambda r: r["metrics"]["clip-tiny"]["ci95"].__setitem__(0, "low"),
     "metrics.clip-tiny.ci95[0] is not a number or null"),
    (lambda r: r.pop("provenance"), "provenance is missing"),
    (lambda r: r.pop("prompt_sets"), "prompt_sets is missing"),
    (lambda r: r["protocol"].update(resolution=[32]), "protocol.resolution is invalid"),
    (lambda r: r["checkpoint"].update(fingerprint="ckpt"), "checkpoint.fingerprint is invalid"),
    (lambda r: r["metrics"].update(broken=[]), "metrics.broken is not an object"),
])
def test_a_run_json_that_breaks_the_schema_is_one_line_naming_the_field(written, tmp_path, edit, message):
    from evalkit.errors import EvalkitError

    run = json.loads(json.dumps(written))
    edit(run)
    path = tmp_path / "m" / "final" / "run.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(run), encoding="utf-8")
    with pytest.raises(EvalkitError) as caught:
        read_run(path)
    line = caught.value.one_line()
    assert f"{path} is garbled: {message}" in line and len(line.splitlines()) == 1


def test_reading_and_rewriting_changes_nothing(written, tmp_path):
    from dataclasses import replace

    from evalkit.results.run import write_run

    path = tmp_path / "run.json"
    path.write_text(json.dumps(written), encoding="utf-8")
    run = read_run(path)
    assert run.to_json() == written
    write_run(path, run)
    assert json.loads(path.read_text(encoding="utf-8")) == written
    # NaN is written as null and reads back as None.
    clip = run.metrics["clip-tiny"]
    write_run(path, replace(run, metrics={**run.metrics, "clip-tiny": replace(clip, value=float("nan"))}))
    assert read_run(path).metrics["clip-tiny"].value is None


def test_bootstrap_kind_is_chosen_once_from_the_metric_interface(tmp_path):
    from evalkit.results.resampling import GENERIC_RESAMPLES, BootstrapKind, bootstrap_kind, prompt_statistic

    tifa, clip = _metrics(tmp_path)
    assert bootstrap_kind(tifa) is BootstrapKind.RATIO and bootstrap_kind(clip) is BootstrapKind.RATIO

    class Resampled:
        bootstrap_resamples = 7

        def resampler(self, groups):
            return lambda indices: float(len(indices))

    class Plain:
        def aggregate(self, records):
            return {"value": sum(r["value"] for r in records) / len(records) if records else None}

    groups = [[{"value": 1.0}], [{"value": 3.0}]]
    resampled = prompt_statistic(Resampled(), groups)
    assert bootstrap_kind(Resampled()) is BootstrapKind.RESAMPLED and resampled.resamples == 7
    plain = prompt_statistic(Plain(), groups)
    assert bootstrap_kind(Plain()) is BootstrapKind.GENERIC and plain.resamples == GENERIC_RESAMPLES
    assert plain.function(np.array([0, 1, 1])) == pytest.approx(7 / 3)
    assert math.isnan(plain.function(np.array([], dtype=int)))
