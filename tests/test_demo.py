"""The README's main command: the demo runs the whole job on tiny models and says they are random."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_demo_writes_images_records_and_scores(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # FID reference statistics
    out = tmp_path / "demo"
    code, stdout, err = cli("demo", "--out", str(out), "--quiet")
    assert code == 0, err
    assert "RANDOM" in stdout and "meaningless" in stdout
    steps = sorted(p.parent.relative_to(out / "runs").as_posix() for p in (out / "runs").rglob("generation.json"))
    assert steps == ["tiny-sd-train/100", "tiny-sd-train/200", "tiny-sd-train/300", "tiny-sd/final"]
    for step in steps:
        step_dir = out / "runs" / step
        assert len(list((step_dir / "images").rglob("*.png"))) == 18
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
    code, stdout, _ = cli("demo", "--out", str(out), "--quiet")  # a second run reuses everything
    assert code == 0 and stdout.count("0 generated, 18 reused") == 4
