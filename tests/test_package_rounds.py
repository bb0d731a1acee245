"""bench/package_baselines.py's interleaving and parity/timing.py's serve-rounds protocol, without the
reference packages (their real runs: `cd bench && python package_baselines.py`; no timing asserted)."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path, monkeypatch):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def timing(monkeypatch):
    return _load("timing", REPO / "parity" / "timing.py", monkeypatch)


@pytest.fixture()
def baselines(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))  # its `from harness import ...`, as when run from bench/
    return _load("package_baselines", REPO / "bench" / "package_baselines.py", monkeypatch)


def test_serve_rounds_answers_one_timed_pass_per_request_line_until_end_of_input(timing):
    passes = []

    def one_pass():
        passes.append(len(passes))
        return [[0.5, float(len(passes))]]

    stream = io.StringIO()
    cases = [{"prompt": "a dog", "images": ["0.png", "1.png"]}]
    rounds = timing.serve_rounds(stream, one_pass, cases, "pkg.score", {"pkg": "1"}, io.StringIO("round\nround\n"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert rounds == 2 and len(passes) == 2  # nothing runs before the first request: the caller warms up
    assert lines[0]["ready"] and lines[0]["call"] == "pkg.score" and lines[0]["images"] == 2
    assert [m["round"] for m in lines[1:]] == [1, 2]
    assert lines[2]["scores"] == [[0.5, 2.0]] and lines[2]["seconds"] >= 0


def test_sides_interleave_after_one_warm_up_each(baselines):
    order = []

    def side(name, seconds):
        def call():
            order.append(name)
            return seconds, len(order)
        return call

    timed = baselines.interleave(side("evalkit", 1.0), side("package", 4.0), repeats=2)
    assert order == ["evalkit", "package"] * 3  # the warm-ups, then repeat 1, then repeat 2
    assert timed.evalkit == [1.0, 1.0] and timed.package == [4.0, 4.0]
    assert timed.last == {"evalkit": 5, "package": 6}


def test_a_reference_process_that_fails_is_one_skip_line(baselines, tmp_path):
    with pytest.raises(baselines.Skip, match=r"^ref_hpsv2 failed in the reference venv \(exit 1\): no output$"):
        baselines.PackageServer("ref_hpsv2", {"cases": []}, Path("/bin/false"), tmp_path, timeout=60)
