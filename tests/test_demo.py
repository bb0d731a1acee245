"""The README's main command: the demo runs the whole job on tiny models and says they are random."""

from __future__ import annotations

import json

import jsonschema
import pytest

from evalkit.results.run import schema_path


@pytest.mark.slow
def test_demo_writes_images_records_and_scores(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # FID reference statistics
    out = tmp_path / "demo"
    code, stdout, err = cli("demo", "--out", str(out), "--quiet")
    assert code == 0, err
    assert "RANDOM" in stdout and "meaningless" in stdout
    steps = sorted(p.parent.relative_to(out / "runs").as_posix() for p in (out / "runs").rglob("generation.json"))
    assert steps == ["tiny-sd-train/100", "tiny-sd-train/200", "tiny-sd-train/300", "tiny-sd/final"]
    validator = jsonschema.Draft202012Validator(json.loads(schema_path().read_text()))
    for step in steps:
        step_dir = out / "runs" / step
        assert len(list((step_dir / "images").rglob("*.png"))) == 26
        summary = json.loads(next((step_dir / "scores" / "clip-tiny").glob("*.summary.json")).read_text())
        assert summary["n_images"] == 8 and -1.0 <= summary["values"]["value"] <= 1.0
        tifa = json.loads(next((step_dir / "scores" / "tifa-tiny").glob("*.summary.json")).read_text())
        assert tifa["values"]["n_questions"] == 19 and 0.0 <= tifa["values"]["value"] <= 1.0
        reward = json.loads(next((step_dir / "scores" / "imagereward-tiny").glob("*.summary.json")).read_text())
        assert reward["n_images"] == 8 and reward["values"]["stdev"] > 0
        hps = json.loads(next((step_dir / "scores" / "hpsv2-tiny").glob("*.summary.json")).read_text())
        assert hps["n_images"] == 8 and -1.0 <= hps["values"]["value"] <= 1.0
        fid = json.loads(next((step_dir / "scores" / "fid-tiny").glob("*.summary.json")).read_text())
        assert fid["values"]["n"] == 8 and fid["values"]["label"] == "FID-8" and fid["values"]["value"] > 0
        prdc = json.loads(next((step_dir / "scores" / "prdc-tiny").glob("*.summary.json")).read_text())
        assert prdc["values"]["n_ref"] == 8 and all(0.0 <= prdc["values"][k] <= 1.0 for k in ("precision", "recall",
                                                                                                "coverage"))
        assert prdc["values"]["reference"] == fid["values"]["reference"]  # FID's features, FID's reference
        fid_records = next((step_dir / "scores" / "fid-tiny").glob("*.jsonl")).read_text().splitlines()
        prdc_records = next((step_dir / "scores" / "prdc-tiny").glob("*.jsonl")).read_text().splitlines()
        assert [json.loads(r)["records"] for r in prdc_records] == [json.loads(r)["records"] for r in fid_records]
        cmmd = json.loads(next((step_dir / "scores" / "cmmd-tiny").glob("*.summary.json")).read_text())
        assert cmmd["values"]["n_ref"] == 8 and cmmd["values"]["value"] > 0
        dsg = json.loads(next((step_dir / "scores" / "dsg-tiny").glob("*.summary.json")).read_text())
        assert dsg["n_images"] == 8 and 0.0 <= dsg["values"]["value"] <= dsg["values"]["without_dependency"] <= 1.0
        vqa = json.loads(next((step_dir / "scores" / "vqascore-tiny").glob("*.summary.json")).read_text())
        assert vqa["n_images"] == 8 and 0.0 < vqa["values"]["value"] < 1.0 and vqa["values"]["backend"] == "clip-flant5"
        qwen = json.loads(next((step_dir / "scores" / "vqascore-qwen-tiny").glob("*.summary.json")).read_text())
        assert qwen["n_images"] == 8 and 0.0 < qwen["values"]["value"] < 1.0
        assert qwen["values"]["backend"] == "qwen2.5-vl"
        for name in ("pickscore-tiny", "aesthetic-tiny"):
            summary = json.loads(next((step_dir / "scores" / name).glob("*.summary.json")).read_text())
            assert summary["n_images"] == 8 and summary["values"]["value"] == summary["values"]["value"]  # not NaN
        run = json.loads((step_dir / "run.json").read_text())
        validator.validate(run)
        assert set(run["metrics"]) == {"clip-tiny", "tifa-tiny", "imagereward-tiny", "hpsv2-tiny", "fid-tiny",
                                       "prdc-tiny", "cmmd-tiny", "pickscore-tiny", "aesthetic-tiny", "vqascore-tiny",
                                       "vqascore-qwen-tiny", "dsg-tiny"}
        assert run["metrics"]["tifa-tiny"]["record_view"]["filter"] == "element_type"  # the site lists questions
        assert "record_view" not in run["metrics"]["imagereward-tiny"]  # one value per image: the default view
        for entry in run["metrics"].values():
            low, high = entry["ci95"]
            assert low <= entry["value"] <= high
    curves = out / "runs" / "tiny-sd-train" / "curves"
    for metric in ("clip-tiny", "tifa-tiny", "fid-tiny"):
        table = json.loads((curves / f"{metric}.json").read_text())
        assert [p["step"] for p in table["series"][0]["points"]] == [100, 200, 300]
        assert (curves / f"{metric}.png").stat().st_size > 0 and (curves / f"{metric}.svg").is_file()
    board = json.loads((out / "leaderboard" / "leaderboard.json").read_text())
    assert {row["model"] for b in board["boards"] for row in b["rows"]} == {"tiny-sd", "tiny-sd-train"}
    assert (out / "site" / "index.html").is_file()
    index = (out / "site" / "index.html").read_text()
    for name in ("prdc-tiny", "cmmd-tiny", "pickscore-tiny", "aesthetic-tiny", "vqascore-tiny", "vqascore-qwen-tiny",
                 "dsg-tiny"):
        assert name in index
    gallery = (out / "site" / "gallery.html").read_text()
    assert 'class="record-filter"' in gallery and "questions correct</summary>" in gallery and "VQA said" in gallery
    efficiency = (out / "site" / "efficiency.html").read_text()
    assert "No run has efficiency data" not in efficiency and "tiny-sd-train" in efficiency  # the demo profiles
    assert run["efficiency"]["latency"]["points"][0]["batch_size"] == 1 and run["efficiency"]["parameters"]["total"] > 0
    # The gate at work on the demo's own cards: the last step passes against the previous one, and its
    # ImageReward drop against the first is flagged, each with the Markdown summary CI would post.
    assert "--baseline runs/tiny-sd-train/200 --thresholds demo.yaml: passes (exit 0)" in stdout
    assert "--baseline runs/tiny-sd-train/100 --thresholds demo.yaml: regression flagged" in stdout
    flagged = (out / "checks" / "300-vs-100.md").read_text()
    assert "❌ regression in `imagereward-tiny`" in flagged and "`tifa-tiny`" in flagged
    assert (out / "checks" / "300-vs-200.md").read_text().startswith("### evalkit check: ✅ no regression")
    for line in ("curves:", "leaderboard:", "site:", "checks:", "judge:"):
        assert line in stdout
    # The judge report on the demo's own TIFA images (2 sample prompts x 4 checkpoints), against stand-in
    # ratings that it labels as such, beside the published judges computed from the shipped file.
    report = json.loads((out / "judge" / "report.json").read_text())
    assert report["note"].startswith("STAND-IN RATINGS") and report["annotations"]["n_images"] == 8
    assert report["published_annotations"]["n_images"] == 800
    (ours,) = report["validated"]
    assert ours["judge"] == "tifa-tiny" and (ours["n_images"], ours["n_prompts"]) == (8, 2)
    published = {row["judge"]: row["pearson"]["value"] for row in report["published"]}
    assert round(published["tifa_mplug-large"], 3) == 0.597 and round(published["tifa_git-large"], 3) == 0.545
    assert (out / "judge" / "report.md").read_text().startswith(
        "### Judge agreement with the human ratings of stand-in-ratings.json\n\n> **STAND-IN RATINGS")
    code, stdout, _ = cli("demo", "--out", str(out), "--quiet")  # a second run reuses everything
    assert code == 0 and stdout.count("already evaluated") == 4
