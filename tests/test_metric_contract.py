"""The scoring contract, checked the same way against every registered metric implementation.

Each metric module has its own tests (parity, errors, its quirks); this suite asks the questions
the score store promises to answer for *any* metric, so a new implementation cannot silently
opt out of them: records do not depend on the batch size; a killed run resumes with only the
missing images and ends where an uninterrupted run ends; images scored in two goes (generation
shards that land at different times, or two machines whose stores are merged) give what one go
gives; a changed card or changed weights never reuse stale records; and FID of a set against
itself is zero.

Models and cards are the demo's tiny random ones (`build_demo_cards`), built once per module;
images come from the real generator, once, as two generation shards (so the step folders hold
`manifest.shard-*-of-2.jsonl`, as a sharded run leaves them). The uninterrupted reference run of
each metric is scored once and reused: a resumed store is that run's store, truncated.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import FAST_STEPS
from support import manifest_hashes

from evalkit.errors import EvalkitError
from evalkit.evaluation.demo import build_demo_cards, coco_dir
from evalkit.fileio.jsonl import read_rows
from evalkit.generation.checkpoints import ResolveOptions, resolve
from evalkit.generation.generator import GenerateOptions, Generator
from evalkit.generation.protocol import GenerationRequest
from evalkit.metrics import fid_stats
from evalkit.metrics.api import Metric
from evalkit.metrics.cards import read_card
from evalkit.metrics.context import MetricContext
from evalkit.metrics.registry import BUILTINS, create
from evalkit.prompts.sets import PromptSet, load_prompt_set
from evalkit.scoring.engine import MetricResult, score_step
from evalkit.scoring.store import ScoreStore

CPU = torch.device("cpu")
IMPLEMENTATIONS = sorted(BUILTINS)
# An implementation with more than one code path (VQAScore's backends) has a demo card per path; the
# second and later are the cases "implementation/card name", so the contract runs every path.
VARIANTS = ["vqascore/vqascore-qwen-tiny"]
CASES = sorted(IMPLEMENTATIONS + VARIANTS)
# The uninterrupted reference run uses this batch size; 8 images per metric make it one full
# batch and one of a single image, so both a batch boundary and a partial batch are exercised.
REFERENCE_BATCH = 7
IMAGES = 8  # per metric: 8 coco-10k, tifa-v1.0 or dsg-1k prompts, or the 2 sample prompts x 4 images
# BATCH SHAPES: every scoring call here batches 7+1, 1 or 4 images (FID references: 8 or 4). On CPU the
# first forward of a new batch shape costs 1-3 s of kernel set-up in Inception, so the suite sticks
# to these few shapes to stay fast; the contract itself does not depend on them.
SHARDS = 2
# Floats are compared to 1e-6 of max(|a|, |b|, 1): the tiny models run in float32, whose rounding
# (~1e-7 absolute for cosines and rewards of order 1) depends on the batch's shape, so a purely
# relative test would fail on values near zero for reasons that are not a contract violation.
REL = 1e-6


@dataclass
class Reference:
    """One metric's uninterrupted run at REFERENCE_BATCH: what every other route must reproduce."""

    result: MetricResult
    store_text: str
    records: dict[str, list[dict[str, Any]]]


@dataclass
class Contract:
    """Everything the tests share: cards by implementation, step folders by prompt set, reference runs."""

    root: Path
    cards: dict[str, Path]
    context: MetricContext
    steps: dict[str, Path]
    metrics: dict[str, Metric] = field(default_factory=dict)
    references: dict[str, Reference] = field(default_factory=dict)

    def metric(self, impl: str) -> Metric:
        """One metric object per implementation, reused so models load once (setup is idempotent)."""
        if impl not in self.metrics:
            self.metrics[impl] = create(str(self.cards[impl]), self.context)
        return self.metrics[impl]

    def fresh_step(self, impl: str, dest: Path) -> Path:
        """A copy of the images the metric scores, without any scores."""
        source = self.steps[self.metric(impl).info.prompt_set]
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns("scores"))
        return dest

    def reference(self, impl: str) -> Reference:
        if impl not in self.references:
            step = self.fresh_step(impl, self.root / "reference" / impl)
            result = score(step, self.metric(impl), REFERENCE_BATCH)
            assert (result.n_images, result.scored, result.reused) == (IMAGES, IMAGES, 0)
            self.references[impl] = Reference(result, store_of(step, result).read_text(encoding="utf-8"),
                                               stored_records(store_of(step, result)))
        return self.references[impl]


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory, sd_dir: Path) -> Iterator[Contract]:
    root = tmp_path_factory.mktemp("contract")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))  # FID reference statistics stay in the sandbox
        coco = load_prompt_set("coco-10k").head(IMAGES)
        tifa = load_prompt_set("tifa-v1.0").head(IMAGES)
        dsg = load_prompt_set("dsg-1k").head(IMAGES)
        sample = load_prompt_set("tifa-v1.0-sample")
        models = root / "models"
        card_paths = build_demo_cards(models, list(coco))
        cards: dict[str, Path] = {}
        for path in card_paths:
            card = read_card(path)
            key = card.implementation if card.implementation not in cards else f"{card.implementation}/{card.name}"
            cards[key] = path
        main = _generate_shards(sd_dir, root / "gen-main", [coco, tifa, dsg], images_per_prompt=1)
        per_sample = IMAGES // len(sample)  # TIFA's two sample prompts, 4 images each
        sample_step = _generate_shards(sd_dir, root / "gen-sample", [sample], images_per_prompt=per_sample)
        steps = {"coco-10k": main, "tifa-v1.0": main, "dsg-1k": main, "tifa-v1.0-sample": sample_step}
        yield Contract(root, cards, MetricContext(coco_images=coco_dir(models)), steps)


def _generate_shards(sd_dir: Path, out: Path, sets: list[PromptSet], images_per_prompt: int) -> Path:
    """The real generator, run as shards 0/2 and 1/2 into one output folder."""
    request = GenerationRequest(steps=FAST_STEPS, images_per_prompt=images_per_prompt)
    ref = resolve(str(sd_dir), ResolveOptions())[0]
    step_dirs = set()
    for index in range(SHARDS):
        options = GenerateOptions(out=out, batch_size=8, shard_index=index, shard_count=SHARDS, quiet=True,
                                  shard_block=1)  # sample by sample, so both halves hold every set
        step_dirs.add(Generator(request, options).run_one(ref, sets).step_dir)
    (step_dir,) = step_dirs
    return step_dir


# --- helpers ------------------------------------------------------------------------------------------------

def score(step_dir: Path, metric: Metric, batch_size: int) -> MetricResult:
    return score_step(step_dir, [metric], CPU, batch_size=batch_size, quiet=True)[0]


def store_of(step_dir: Path, result: MetricResult) -> Path:
    """The records file: the summary's sibling (scores/<metric>/<fingerprint[:16]>.jsonl)."""
    path = store_path(step_dir, result)
    assert path.is_file()
    return path


def store_path(step_dir: Path, result: MetricResult) -> Path:
    """Where `result`'s records file is, or would be, in `step_dir` (same metric, same fingerprint)."""
    relative = result.summary_path.relative_to(result.summary_path.parents[2])
    return step_dir / relative.with_name(relative.name.removesuffix(".summary.json") + ".jsonl")


def stored_records(store: Path) -> dict[str, list[dict[str, Any]]]:
    """file -> records, latest line wins (as ScoreStore reads them)."""
    return {row["file"]: row["records"] for row in read_rows(store)}


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Structural equality; floats to REL of their scale, NaN equal to NaN, FID features decoded."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            if key == "features" and isinstance(a[key], str):
                fa, fb = fid_stats.decode_features(a[key]), fid_stats.decode_features(b[key])
                scale = max(float(np.abs(fa).max()), float(np.abs(fb).max()), 1.0)
                assert fa.shape == fb.shape and float(np.abs(fa - fb).max()) <= REL * scale, f"{where}.features"
            else:
                assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert not isinstance(a, bool) and not isinstance(b, bool), f"{where}: {a!r} vs {b!r}"
        if math.isnan(a) or math.isnan(b):
            assert math.isnan(a) and math.isnan(b), f"{where}: {a!r} vs {b!r}"
        else:
            assert abs(a - b) <= REL * max(abs(a), abs(b), 1.0), f"{where}: {a!r} vs {b!r}"
    else:
        assert a == b and type(a) is type(b), f"{where}: {a!r} vs {b!r}"


def assert_matches_reference(reference: Reference, result: MetricResult, records: dict[str, Any]) -> None:
    assert result.fingerprint == reference.result.fingerprint
    assert result.n_images == reference.result.n_images
    assert records.keys() == reference.records.keys()
    assert_same(records, reference.records, "records")
    assert_same(result.values, reference.result.values, "aggregate")


def perturb_one_weight(path: Path) -> str:
    """Add 0.5 to one element of one floating-point tensor, in place; returns the tensor's name."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file, save_file

        state = load_file(str(path))
        name = _first_float(state)
        state[name].view(-1)[0] += 0.5
        save_file(state, str(path))
        return name
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint)
    name = _first_float(state)
    state[name].view(-1)[0] += 0.5
    torch.save(checkpoint, path)
    return name


def _first_float(state: dict[str, torch.Tensor]) -> str:
    return next(k for k in sorted(state) if state[k].is_floating_point() and state[k].numel() > 1)


def copy_card_models(card: Path, dest: Path) -> tuple[Path, Path]:
    """A copy of the card whose model folders and weight files are copies under `dest`.

    Returns (card copy, the weights file whose change must change the fingerprint): the first
    model's first weights file, or params.weights (FID has no model folder).
    """
    raw = yaml.safe_load(card.read_text(encoding="utf-8"))
    dest.mkdir(parents=True)
    targets: list[Path] = []
    for role, spec in (raw.get("models") or {}).items():
        copy = dest / role
        shutil.copytree(spec["source"], copy)
        spec["source"] = str(copy)
        targets += sorted(p for p in copy.rglob("*") if p.suffix in (".safetensors", ".pt", ".pth"))
    params = raw.get("params") or {}
    if "features" in params:  # PRDC: its weights are its features card's (FID's Inception)
        params["features"], features_weights = (str(p) for p in copy_card_models(Path(params["features"]),
                                                                                 dest / "features"))
        targets.append(Path(features_weights))
    if "weights" in params:
        copy = dest / Path(params["weights"]).name
        shutil.copy2(params["weights"], copy)
        params["weights"] = str(copy)
        targets.insert(0, copy)
    assert targets, f"{card} names no weights to change"
    out = dest / card.name
    out.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return out, targets[0]


# --- the suite ----------------------------------------------------------------------------------------------

def test_every_registered_implementation_has_a_tiny_demo_card(contract):
    """A new implementation (or a second code path's card) must be a case, or the contract below never sees it."""
    assert sorted(contract.cards) == CASES
    for impl in CASES:
        assert isinstance(contract.metric(impl), Metric)


@pytest.mark.parametrize("impl", CASES)
def test_batch_size_one_and_seven_give_the_same_records_and_aggregate(contract, impl, tmp_path):
    reference = contract.reference(impl)
    step = contract.fresh_step(impl, tmp_path / "step")
    one = score(step, contract.metric(impl), batch_size=1)
    assert (one.scored, one.reused) == (IMAGES, 0)
    assert_matches_reference(reference, one, stored_records(store_of(step, one)))


@pytest.mark.parametrize("cut", ["mid-line", "newline-missing"])
@pytest.mark.parametrize("impl", CASES)
def test_killed_run_resumes_with_only_the_missing_images(contract, impl, cut, tmp_path):
    """The store after a kill: 4 whole rows, then the 5th torn (mid-row, or all but its newline)."""
    reference = contract.reference(impl)
    step = contract.fresh_step(impl, tmp_path / "step")
    store = store_path(step, reference.result)
    lines = reference.store_text.splitlines(keepends=True)
    assert len(lines) == IMAGES
    kept = IMAGES // 2  # the 4 pending images make a batch shape the shard tests use too (see BATCH SHAPES)
    torn = lines[kept][: len(lines[kept]) // 2] if cut == "mid-line" else lines[kept].rstrip("\n")
    store.parent.mkdir(parents=True)
    store.write_text("".join(lines[:kept]) + torn, encoding="utf-8")

    resumed = score(step, contract.metric(impl), REFERENCE_BATCH)
    assert (resumed.scored, resumed.reused) == (IMAGES - kept, kept)
    assert store_of(step, resumed) == store
    assert_matches_reference(reference, resumed, stored_records(store))
    # The repaired store (the torn line sealed, then the new rows) reads as one complete run.
    done = ScoreStore(step, resumed.metric, resumed.fingerprint).scored()
    assert set(done) == {(file, sha) for file, sha in manifest_hashes(step).items()
                         if file in reference.records} and len(done) == IMAGES


@pytest.mark.parametrize("impl", CASES)
def test_shards_scored_as_they_land_equal_one_run(contract, impl, tmp_path):
    """Generation shard 0 scored alone, then again once shard 1's manifest is there."""
    reference = contract.reference(impl)
    step = contract.fresh_step(impl, tmp_path / "step")
    late = step / f"manifest.shard-1-of-{SHARDS}.jsonl"
    parked = tmp_path / late.name
    late.rename(parked)
    first = score(step, contract.metric(impl), REFERENCE_BATCH)
    half = IMAGES // SHARDS
    assert (first.n_images, first.scored, first.reused) == (half, half, 0)
    parked.rename(late)
    second = score(step, contract.metric(impl), REFERENCE_BATCH)
    assert (second.n_images, second.scored, second.reused) == (IMAGES, IMAGES - half, half)
    assert_matches_reference(reference, second, stored_records(store_of(step, second)))


@pytest.mark.parametrize("impl", CASES)
def test_stores_of_two_disjoint_halves_concatenated_equal_one_run(contract, impl, tmp_path):
    """Each half scored in its own copy (two machines); the append-only stores, concatenated, are one run's."""
    reference = contract.reference(impl)
    texts = []
    for index in range(SHARDS):
        step = contract.fresh_step(impl, tmp_path / f"half-{index}")
        for other in step.glob("manifest.shard-*.jsonl"):
            if other.name != f"manifest.shard-{index}-of-{SHARDS}.jsonl":
                other.unlink()
        result = score(step, contract.metric(impl), REFERENCE_BATCH)
        assert (result.scored, result.reused) == (IMAGES // SHARDS, 0)
        texts.append(store_of(step, result).read_text(encoding="utf-8"))
    merged = contract.fresh_step(impl, tmp_path / "merged")
    store = store_path(merged, reference.result)
    store.parent.mkdir(parents=True)
    store.write_text("".join(texts), encoding="utf-8")
    result = score(merged, contract.metric(impl), REFERENCE_BATCH)
    assert (result.scored, result.reused) == (0, IMAGES)
    assert_matches_reference(reference, result, stored_records(store))


@pytest.mark.parametrize("impl", CASES)
def test_a_changed_card_changes_the_fingerprint(contract, impl, tmp_path):
    """Any card content is part of the fingerprint (and so of the store's file name); a param the
    implementation does not declare is refused, never silently ignored."""
    raw = yaml.safe_load(contract.cards[impl].read_text(encoding="utf-8"))
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**raw, "higher_is_better": not raw["higher_is_better"]}, sort_keys=False),
                       encoding="utf-8")
    assert create(str(changed), contract.context).fingerprint() != contract.metric(impl).fingerprint()
    probe = tmp_path / "probe.yaml"
    probe.write_text(yaml.safe_dump({**raw, "params": {**(raw.get("params") or {}), "contract_probe": 1}},
                                    sort_keys=False), encoding="utf-8")
    with pytest.raises(EvalkitError, match=f"metric card {re.escape(str(probe))} has unknown param 'contract_probe'"):
        create(str(probe), contract.context)


@pytest.mark.parametrize("impl", CASES)
def test_changed_weights_under_the_same_card_never_reuse_stale_records(contract, impl, tmp_path):
    """Same card text, same model path; one weight changed in place → new fingerprint, everything rescored."""
    reference = contract.reference(impl)
    card, weights = copy_card_models(contract.cards[impl], tmp_path / "models")
    step = contract.fresh_step(impl, tmp_path / "step")
    before = create(str(card), contract.context)
    stale = step / "scores" / before.info.name / f"{before.fingerprint()[:16]}.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text(reference.store_text, encoding="utf-8")  # these weights' records (byte-identical copies)
    assert score(step, before, REFERENCE_BATCH).scored == 0  # the copy is taken as a complete run

    perturb_one_weight(weights)
    after = create(str(card), contract.context)
    assert after.fingerprint() != before.fingerprint()
    result = score(step, after, REFERENCE_BATCH)
    assert (result.scored, result.reused) == (IMAGES, 0)
    assert store_of(step, result) != stale and stale.read_text(encoding="utf-8") == reference.store_text
    assert len(stored_records(store_of(step, result))) == IMAGES


def test_fid_of_the_images_against_themselves_is_zero(contract, tmp_path, monkeypatch):
    """The reference folder holds the generated PNGs under their prompts' COCO names (same size:
    resize and crop are the identity), so both sides are the same images through the same extractor."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # reference stats are cached by COCO file names
    reference = contract.reference("fid")
    step = contract.fresh_step("fid", tmp_path / "step")
    folder = tmp_path / "self-coco"
    folder.mkdir()
    for file, records in reference.records.items():
        shutil.copyfile(step / file, folder / records[0]["coco_file"])
    store = store_path(step, reference.result)
    store.parent.mkdir(parents=True)
    store.write_text(reference.store_text, encoding="utf-8")  # the features are reused; only the reference is new

    metric = create(str(contract.cards["fid"]), MetricContext(coco_images=folder))
    result = score(step, metric, REFERENCE_BATCH)
    assert result.fingerprint == reference.result.fingerprint and (result.scored, result.reused) == (0, IMAGES)
    v = result.values
    fake = np.stack([fid_stats.decode_features(r[0]["features"]) for r in reference.records.values()])
    scale = float(np.trace(fid_stats.mean_cov(fake)[1]))
    assert scale > 1e-3  # the features are not degenerate, so 0 is not trivially true
    assert v["n"] == v["n_ref"] == IMAGES
    assert abs(v["fid"]) <= 1e-6 * scale, (v["fid"], scale)
    assert reference.result.values["fid"] > 1e3 * max(abs(v["fid"]), 1e-9)  # vs the synthetic COCO: clearly not 0
    # The reference side's features are the scoring side's features, image by image.
    cached = fid_stats.load_reference(v["reference"])
    assert cached is not None
    by_coco = {r[0]["coco_file"]: fid_stats.decode_features(r[0]["features"]) for r in reference.records.values()}
    expected = np.stack([by_coco[name] for name in sorted(by_coco)])
    assert float(np.abs(cached["features"] - expected).max()) <= REL * max(float(np.abs(expected).max()), 1.0)


def test_all_metrics_in_one_call_decode_each_image_once_and_store_what_each_stores_alone(contract, tmp_path,
                                                                                        monkeypatch):
    """`evalkit score --metrics a,b,c` walks the images once (scoring/onepass.py): every PNG is read and
    decoded once for all metrics, yet each metric's store is the one it writes scored alone, byte for
    byte, because it still gets its own batches (7 + 1 here). PRDC borrows FID's records in the same
    call (a second decode would show as a second read), and CLIP score resumes from a killed run."""
    from evalkit.scoring import onepass

    impls = [i for i in CASES if contract.metric(i).info.prompt_set != "tifa-v1.0-sample"]
    assert {"fid", "prdc", "clip_score", "dsg", "imagereward", "hpsv2"} <= set(impls)  # TIFA: its sample step
    references = {impl: contract.reference(impl) for impl in impls}
    step = contract.fresh_step("fid", tmp_path / "step")
    resumed = "clip_score"
    kept = IMAGES // 2
    store = store_path(step, references[resumed].result)
    store.parent.mkdir(parents=True)
    store.write_text("".join(references[resumed].store_text.splitlines(keepends=True)[:kept]), encoding="utf-8")

    reads: list[str] = []
    read_verified = onepass.read_verified

    def counted(item):
        reads.append(item.file)
        return read_verified(item)

    monkeypatch.setattr(onepass, "read_verified", counted)
    results = score_step(step, [contract.metric(impl) for impl in impls], CPU, batch_size=REFERENCE_BATCH,
                         quiet=True)

    needed = {file for impl in impls for file in references[impl].records}
    assert sorted(reads) == sorted(needed)  # once each: 24 reads where one call per metric makes 8 per metric
    assert len(reads) < sum(len(references[impl].records) for impl in impls) / 3
    for impl, result in zip(impls, results, strict=True):
        reference = references[impl]
        assert_matches_reference(reference, result, stored_records(store_of(step, result)))
        expected = (IMAGES - kept, kept) if impl == resumed else (IMAGES, 0)
        assert (result.scored, result.reused) == expected, impl
        if impl != resumed:  # the same batches as alone: the same bytes, not merely the same values
            assert store_of(step, result).read_text(encoding="utf-8") == reference.store_text, impl
