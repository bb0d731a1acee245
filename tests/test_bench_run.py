"""bench/run.py's verdicts: pure arithmetic over raw bench reports (no bench runs here; no timing asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH_RUN = Path(__file__).resolve().parents[1] / "bench" / "run.py"


@pytest.fixture(scope="module")
def bench_run():
    spec = importlib.util.spec_from_file_location("bench_run", BENCH_RUN)
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "bench_run", module)  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return module


def _generation(gen_seconds, images, overhead=0.02, speedup=1.0):
    return {"config": {"images": images, "resolution": 32}, "summary": {"evalkit": {"gen": {"median": gen_seconds}}},
            "overhead": {"generation_median": overhead}, "speedup": speedup, "parity": {"max_abs_diff": 1}}


def _metrics():
    rows = [{"metric": "clip_score", "summary": {"evalkit_seconds_median": 2.0, "speedup": 3.0}},
            {"metric": "tifa", "summary": {"evalkit_seconds_median": 4.0, "speedup": 25.0}},
            {"metric": "tifa/vqa", "summary": {"evalkit_seconds_median": 3.0, "speedup": 30.0}},
            {"metric": "fid", "summary": {"evalkit_seconds_median": 1.0, "speedup": 1.5}}]
    return {"config": {"images": 10, "tifa_images": 4, "fid_images": 5}, "rows": rows}


def test_metrics_share_weighs_each_metric_by_its_prompt_set(bench_run):
    # generation 0.5 s/image; clip 0.2 s/image x 100, tifa 1 s/image x 50, fid 0.2 s/image x 100 (tifa/vqa left out)
    share, per_metric = bench_run.metrics_share(_metrics(), _generation(8.0, 16),
                                                {"clip_score": 100, "tifa": 50, "fid": 100})
    assert per_metric == pytest.approx({"clip_score": 20.0, "tifa": 50.0, "fid": 20.0})
    assert share == pytest.approx(90.0 / (0.5 * bench_run.PROTOCOL_IMAGES))


def test_targets_judge_each_line_and_say_what_was_not_measured(bench_run):
    raw = {"generation_overhead": {"report": _generation(8.0, 16, overhead=0.05)},
           "generation_vs_one_prompt": {"report": _generation(1.0, 16, speedup=16.0)},
           "latency": {"report": {"achieved_tflops": {"1": 10.0, "4": 30.0}}},
           "metrics": {"report": _metrics()},
           "metrics_failed": {"report": None, "error": "exit 1"}}
    got = {t.name: t for t in bench_run.targets(raw, "tiny-cpu", {"tflops": 100.0, "dtype": "float32"},
                                                 {"clip_score": 100, "tifa": 50, "fid": 100})}
    assert got["generation_mfu"].value == pytest.approx(0.30) and got["generation_mfu"].verdict == "FAIL"
    assert got["generation_vs_one_prompt"].verdict == "PASS"
    assert got["generation_vs_one_prompt_512"].verdict == "NOT MEASURED"
    assert got["tifa_vs_reference_loop"].value == 25.0 and got["tifa_vs_reference_loop"].verdict == "PASS"
    assert got["harness_overhead"].verdict == "FAIL"  # 5 % > 3 %
    assert got["metrics_share"].verdict == "PASS"
    assert got["imagereward_vs_package"].verdict == "NOT MEASURED"
    assert {t.setting for t in got.values()} == {"tiny-cpu"}
    empty = {t.name: t.verdict for t in bench_run.targets({}, "full-gpu", {}, {})}
    assert set(empty.values()) == {"NOT MEASURED"}


def test_levers_quote_the_one_pass_and_git_cache_measurements_with_their_parity(bench_run):
    metrics = _metrics()
    metrics["one_pass"] = {"metrics": ["clip_score", "imagereward"], "speedup": 1.6, "values_equal": True}
    metrics["rows"].append({"metric": "tifa/git-cache", "summary": {"speedup": 3.5},
                            "parity": {"answers_equal": 37, "answers": 38}})
    got = {lever["name"]: lever for lever in bench_run.levers({"metrics": {"report": metrics}})}
    assert got["one_pass"]["speedup"] == 1.6 and got["one_pass"]["parity"] == "values equal"
    assert "clip_score+imagereward" in got["one_pass"]["description"]
    assert got["git_image_token_cache"]["speedup"] == 3.5
    assert got["git_image_token_cache"]["parity"] == "37/38 answers equal"
    metrics["one_pass"]["values_equal"] = False
    assert bench_run.levers({"metrics": {"report": metrics}})[0]["parity"] == "values DIFFER"
    assert bench_run.levers({"metrics": {"report": None, "error": "timed out"}}) == []
    assert bench_run.levers({}) == []


def test_the_compile_lever_quotes_speedup_cost_break_even_and_parity(bench_run):
    compiled = {"config": {"backend": "inductor"}, "speedup": 1.3, "compile_seconds": {"cold": 60.0, "warm": 9.0},
                "breakeven_images": {"cold": 2400.0, "warm": None}, "noisy": False,
                "parity": {"images": 16, "max_abs_diff": 1, "share_differing": 0.001}}
    (lever,) = bench_run.levers({"generation_compile": {"report": compiled}})
    assert lever["name"] == "torch_compile" and lever["speedup"] == 1.3
    assert "60.0 s cold / 9.0 s warm" in lever["description"] and "2,400 / never images" in lever["description"]
    assert lever["parity"] == "max |diff| 1 uint8 levels over 16 images"


def _packages(ir_speedup, hps_speedup, hps_diff=1e-6):
    def row(metric, speedup, diff):
        return {"metric": metric, "images": 64, "parity": {"max_abs_diff": diff},
                "summary": {"speedup": speedup, "evalkit_images_per_second": 10.0 * speedup,
                            "package_images_per_second": 10.0}}

    return {"config": {"device": "cpu", "package_device": "cpu"}, "noisy": False,
            "rows": [row("imagereward", ir_speedup, 1e-6), row("hpsv2", hps_speedup, hps_diff)], "skipped": []}


def test_package_targets_need_the_speedup_and_score_parity(bench_run):
    def verdicts(report):
        got = {t.name: t for t in bench_run.targets({"packages": {"report": report}}, "tiny-cpu", {}, {})}
        return got["imagereward_vs_package"], got["hpsv2_vs_package"]

    ir, hps = verdicts(_packages(12.0, 9.5))
    assert (ir.value, ir.verdict) == (12.0, "PASS")
    assert (hps.value, hps.verdict) == (9.5, "FAIL")  # below 10x
    assert "parity max |diff| 1.0e-06" in ir.note
    _, hps = verdicts(_packages(12.0, 40.0, hps_diff=0.5))
    assert hps.verdict == "FAIL" and "SCORES DISAGREE" in hps.note  # fast but not the package's metric
    # One metric skipped by the bench (e.g. its reference script failed): that line alone is not measured.
    report = _packages(12.0, 40.0)
    report["rows"] = report["rows"][:1]
    report["skipped"] = [{"metric": "hpsv2", "reason": "ref_hpsv2 failed in the reference venv"}]
    ir, hps = verdicts(report)
    assert ir.verdict == "PASS" and hps.verdict == "NOT MEASURED" and "ref_hpsv2 failed" in hps.note
    # The packages bench failed (no report) or did not run: both lines stay NOT MEASURED.
    for raw in ({"packages": {"report": None, "error": "exit 1"}}, {}):
        got = {t.name: t for t in bench_run.targets(raw, "tiny-cpu", {}, {})}
        assert got["imagereward_vs_package"].verdict == got["hpsv2_vs_package"].verdict == "NOT MEASURED"
