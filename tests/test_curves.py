"""Training curves: series never mix fingerprints, rebuilds are byte-identical, resumed runs add only new steps."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest

from evalkit.errors import EvalkitError
from evalkit.fileio.hashing import sha256_bytes
from evalkit.results.curves import collect_curves, compute_for, derived_compute, write_curves

PROTO_A, PROTO_B = "a" * 64, "b" * 64


def ckpt_fp(step):
    """The fixture's weights fingerprint of a step (a sha256, as run.json requires)."""
    return sha256_bytes(f"ckpt{step}".encode())


def write_run(model_dir, step, value, *, protocol=PROTO_A, metric_fp="e" * 64, prompt_fp="f" * 64,
              finished="2026-01-01T00:00:00+00:00", steps=50, metric="clip"):
    """A valid run.json as docs/results.md describes it; what curves read comes from the arguments."""
    step_dir = model_dir / str(step)
    step_dir.mkdir(parents=True, exist_ok=True)
    run = {
        "schema_version": "evalkit.run/1",
        "checkpoint": {"name": model_dir.name, "step": step if isinstance(step, int) else None,
                       "step_label": str(step), "fingerprint": ckpt_fp(step), "pipeline_class": "X", "source": {}},
        "protocol": {"scheduler": "DDIMScheduler", "steps": steps, "guidance_scale": 7.5, "seed": 0,
                     "resolution": [512, 512], "dtype": "bfloat16", "negative_prompt": "", "images_per_prompt": 1,
                     "fingerprint": protocol},
        "prompt_sets": {"coco-10k": {"fingerprint": prompt_fp, "n": 4}},
        "metrics": {metric: {"value": value, "ci95": [value - 0.01, value + 0.01], "n": 4, "higher_is_better": True,
                             "display_name": "CLIP score", "version": "1", "prompt_set": "coco-10k",
                             "prompt_set_fingerprint": prompt_fp, "fingerprint": metric_fp,
                             "card": {"name": metric}, "values": {"value": value, "n": 4},
                             "bootstrap": {"method": "percentile", "unit": "prompt", "resamples": 1000, "seed": 0,
                                           "level": 0.95},
                             "by_category": {}, "records": f"scores/{metric}/{metric_fp[:16]}.jsonl",
                             "units": f"scores/{metric}/{metric_fp[:16]}.units.json"}},
        "provenance": {"evalkit": "0.1.0", "git_commit": None,
                       "versions": {"torch": "2.13.0", "diffusers": "0.42.1", "transformers": "5.23.0"},
                       "device": {"type": "cpu"}, "started": finished, "finished": finished,
                       "seconds": {"generate": 1.0, "score": {metric: 1.0}},
                       "images_per_second": {"generate": 4.0, "score": {metric: 4.0}}},
    }
    (step_dir / "run.json").write_text(json.dumps(run), encoding="utf-8")
    return step_dir


def read_csv(path):
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_curves_from_complete_integer_steps_only(tmp_path):
    model = tmp_path / "out" / "run-a"
    write_run(model, 200, 0.30)
    write_run(model, 100, 0.25)
    write_run(model, "final", 0.99)  # a released model, not a training step
    (model / "300").mkdir()  # generated but never scored: incomplete, no run.json
    (model / "300" / "generation.json").write_text("{}")
    paths = write_curves(model)
    names = sorted(p.name for p in paths)
    assert names == ["clip.csv", "clip.json", "clip.png", "clip.svg"]
    rows = read_csv(model / "curves" / "clip.csv")
    assert [(r["step"], r["value"], r["ci_low"], r["n"], r["fingerprint"]) for r in rows] == [
        ("100", "0.25", "0.24", "4", ckpt_fp(100)), ("200", "0.3", "0.29", "4", ckpt_fp(200))]
    assert list(rows[0]) == ["series", "step", "value", "ci_low", "ci_high", "n", "fingerprint"]  # no compute
    record = json.loads((model / "curves" / "clip.json").read_text())
    assert record["schema_version"] == "evalkit.curves/1" and record["compute"] is None
    assert len(record["series"]) == 1 and [p["step"] for p in record["series"][0]["points"]] == [100, 200]


@pytest.mark.parametrize("changed", ["protocol", "metric_fp", "prompt_fp"])
def test_a_changed_protocol_card_or_prompt_set_starts_a_new_series(tmp_path, changed):
    model = tmp_path / "out" / "run-b"
    write_run(model, 100, 0.25)
    write_run(model, 200, 0.30)
    write_run(model, 300, 0.50, finished="2026-02-01T00:00:00+00:00", steps=20, **{changed: "c" * 64})
    write_run(model, 400, 0.55, finished="2026-02-02T00:00:00+00:00", steps=20, **{changed: "c" * 64})
    write_curves(model, plots=False)
    record = json.loads((model / "curves" / "clip.json").read_text())
    newest, oldest = record["series"]  # newest series first
    assert [p["step"] for p in newest["points"]] == [300, 400]
    assert [p["step"] for p in oldest["points"]] == [100, 200]
    assert newest["series"] != oldest["series"] and len(newest["series"]) == 8
    assert newest["describe"].startswith(newest["series"]) and "20 steps" in newest["describe"]
    rows = read_csv(model / "curves" / "clip.csv")
    assert [(r["series"], r["step"]) for r in rows] == [(newest["series"], "300"), (newest["series"], "400"),
                                                        (oldest["series"], "100"), (oldest["series"], "200")]
    # Labels are a function of the key alone: the same key gets the same label in another model.
    other = tmp_path / "out" / "run-c"
    write_run(other, 100, 0.1)
    assert collect_curves(other)[0].series[0].label == oldest["series"]


def test_rebuild_is_byte_identical_and_keeps_the_compute_axis(tmp_path):
    model = tmp_path / "out" / "run-d"
    for step, value in ((100, 0.2), (200, 0.25), (300, 0.27)):
        write_run(model, step, value)
    write_run(model, 400, 0.1, protocol=PROTO_B, finished="2026-03-01T00:00:00+00:00")
    write_curves(model, compute_for(None, flops_per_step=1e15))
    folder = model / "curves"
    first = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    assert set(first) == {"clip.csv", "clip.json", "clip.png", "clip.svg", "compute.json"}
    write_curves(model)  # no compute given: compute.json is reused
    assert {p.name: p.read_bytes() for p in sorted(folder.iterdir())} == first
    rows = read_csv(folder / "clip.csv")
    assert {r["step"]: r["compute"] for r in rows} == {"100": str(10**17), "200": str(2 * 10**17),
                                                        "300": str(3 * 10**17), "400": str(4 * 10**17)}
    assert json.loads(first["clip.json"])["compute"]["method"] == "given (--flops-per-step)"
    assert b"<dc:date>" not in first["clip.svg"]
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))


def test_compute_options_are_checked():
    with pytest.raises(EvalkitError, match="both given"):
        compute_for(None, flops_per_step=1.0, train_batch_size=2)
    with pytest.raises(EvalkitError, match="positive"):
        compute_for(None, flops_per_step=-1.0)
    assert compute_for(None) is None


def test_derived_compute_is_six_denoiser_macs_per_sample(train_dir):
    from evalkit.generation.checkpoints import ResolveOptions, resolve
    from evalkit.profile import profile_spec
    from evalkit.profile.sources import spec_from_ref

    spec = spec_from_ref(resolve(str(train_dir / "checkpoint-200"), ResolveOptions())[0])
    compute = derived_compute(spec, 16)
    macs = profile_spec(spec).compute[0].denoiser.total  # native resolution, batch 1
    assert compute.flops_per_step == 3 * 2 * macs * 16 and compute.derivation["denoiser_macs"] == macs
    assert compute.derivation["train_batch_size"] == 16 and compute.derivation["resolution"] == 32


@pytest.fixture(scope="module")
def clip_card(models):
    from evalkit.tiny.clip import build_tiny_clip, write_card

    folder = models / "tiny-clip"
    if not (folder / "config.json").is_file():
        build_tiny_clip(folder)
    return write_card(models / "clip-tiny-curves.yaml", "clip-tiny", "clip_score", "tifa-v1.0-sample",
                      {"clip": folder})


def test_resumed_run_on_a_training_folder_evaluates_only_new_checkpoints(cli, train_dir, clip_card, tmp_path,
                                                                          monkeypatch):
    from evalkit.generation.loading import PipelineLoader

    train = tmp_path / "train"
    shutil.copytree(train_dir, train, ignore=shutil.ignore_patterns("checkpoint-300"))
    out = tmp_path / "out"
    args = ["run", str(train), "--metrics", str(clip_card), "--steps", "4", "--out", str(out),
            "--quiet"]
    code, stdout, err = cli(*args, "--train-batch-size", "4")
    assert code == 0, err
    curves = out / "train" / "curves"
    before = read_csv(curves / "clip-tiny.csv")
    assert [r["step"] for r in before] == ["100", "200"] and all(r["compute"] for r in before)

    loaded = []
    original = PipelineLoader.load
    monkeypatch.setattr(PipelineLoader, "load", lambda self, ref: loaded.append(ref.step) or original(self, ref))
    shutil.copytree(train_dir / "checkpoint-300", train / "checkpoint-300")
    code, stdout, err = cli(*args)
    assert code == 0, err
    assert loaded == [300]  # steps 100/200 were skipped without loading a pipeline
    assert stdout.count("already evaluated") == 2 and "train@300: 2 generated" in stdout
    after = read_csv(curves / "clip-tiny.csv")
    assert [r["step"] for r in after] == ["100", "200", "300"]
    assert after[:2] == before  # compute axis kept from compute.json, old rows untouched
    assert len({r["series"] for r in after}) == 1


def test_the_comparability_key_names_the_series():
    from evalkit.fileio.hashing import sha256_json
    from evalkit.results.comparability import ComparabilityKey

    key = ComparabilityKey(PROTO_A, "e" * 64, "f" * 64)
    assert ComparabilityKey.from_json(key.to_json()) == key
    assert key.digest == sha256_json({"metric_fingerprint": "e" * 64, "prompt_set_fingerprint": "f" * 64,
                                      "protocol_fingerprint": PROTO_A})
    # Sorting keys groups a protocol's variants together (the leaderboard ranks variants per protocol).
    keys = [ComparabilityKey(PROTO_B, "0" * 64, "0" * 64), ComparabilityKey(PROTO_A, "f" * 64, "0" * 64), key]
    assert [k.protocol_fingerprint for k in sorted(keys)] == [PROTO_A, PROTO_A, PROTO_B]


def test_a_step_whose_run_json_breaks_the_schema_is_refused_by_name(tmp_path):
    model = tmp_path / "out" / "run-e"
    write_run(model, 100, 0.25)
    path = write_run(model, 200, 0.3) / "run.json"
    run = json.loads(path.read_text(encoding="utf-8"))
    del run["metrics"]["clip"]["units"]
    path.write_text(json.dumps(run), encoding="utf-8")
    with pytest.raises(EvalkitError, match=r"200/run.json is garbled: metrics.clip.units is missing"):
        write_curves(model, plots=False)
