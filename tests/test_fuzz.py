"""Property-based fuzzing (hypothesis) of every file a user or another tool hands evalkit.

The property is the bad-input contract: whatever the bytes, the reader either accepts the file
or refuses it with one EvalkitError line; the commands that read results (`check`,
`leaderboard`, `site`) exit 0, 1 or 2 with no traceback, and a refused input leaves nothing
written or half-written. Mutations start from valid files (so they reach deep fields, not only
the JSON parser) and also include arbitrary bytes. docs/reliability.md records the counts.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sitefixtures import write_runs

from evalkit.errors import EvalkitError

EXAMPLES = 120
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document a mutation can hit."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, document: dict[str, Any]) -> bytes:
    """A valid document with a few of its values replaced, keys dropped or added; or raw bytes."""
    kind = draw(st.sampled_from(["mutate", "mutate", "mutate", "truncate", "bytes"]))
    text = json.dumps(document)
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "truncate":
        return text.encode("utf-8")[:draw(st.integers(0, len(text) - 1))]
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(json_values)
    return json.dumps(doc, allow_nan=True).encode("utf-8")


def _evalkit(*args: str) -> tuple[int, str]:
    """`evalkit ARGS` through the real entry point, in this process: (exit code, stderr)."""
    from evalkit.cli.app import main

    err = io.StringIO()
    code = 0
    with mock.patch.object(sys, "argv", ["evalkit", *args]), contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(io.StringIO()):
        try:
            main()
        except SystemExit as e:
            code = int(e.code or 0)
    return code, err.getvalue()


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.exists() else {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The site fixtures' runs, with the per-prompt units `evalkit score` writes for CLIP (so `check`
    gets past its inputs to the comparison itself)."""
    from evalkit.results.units import prompt_groups, write_units

    written = write_runs(tmp_path_factory.mktemp("fuzz-runs"))
    for step in ("100", "200", "300"):
        step_dir = written.run("tiny-train", step).parent
        clip = json.loads((step_dir / "run.json").read_text(encoding="utf-8"))["metrics"]["clip"]
        groups = prompt_groups(step_dir, "clip", clip["fingerprint"], clip["prompt_set"])
        ratio = ([sum(r["value"] for r in g) for g in groups.groups], [len(g) for g in groups.groups])
        write_units(step_dir, "clip", clip["fingerprint"], groups, {"value": ratio})
    return written


def _one_line_refusal(code: int, err: str, allowed: tuple[int, ...] = (0, 2)) -> None:
    assert code in allowed, err
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, err


def _fuzz_result_file(runs: Any, tmp_path: Path, data: bytes, target: tuple[str, str], file: Callable[[Path], Path],
                      ) -> None:
    """Write `data` over one result file of a copy of the runs; check, leaderboard and site must cope."""
    out = tmp_path / "out"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(runs.out, out)
    run_json = out / target[0] / target[1] / "run.json"
    file(run_json).write_bytes(data)
    baseline = out / "tiny-train" / "100" / "run.json"
    code, err = _evalkit("check", str(run_json), "--baseline", str(baseline), "--metrics", "clip")
    event(f"check exit {code}")
    _one_line_refusal(code, err, (0, 1, 2))
    into = tmp_path / "lb"
    before = _tree(into)
    code, err = _evalkit("leaderboard", str(out), "--into", str(into))
    event(f"leaderboard exit {code}")
    _one_line_refusal(code, err)
    if code != 0:
        assert _tree(into) == before  # refused: the store and its outputs are as they were
    site = tmp_path / "site"
    shutil.rmtree(site, ignore_errors=True)
    code, err = _evalkit("site", str(out), "--out", str(site), "--leaderboard", str(tmp_path / "none"))
    event(f"site exit {code}")
    _one_line_refusal(code, err)
    if code != 0:
        assert not site.exists()  # nothing half-built where the site goes


RUN_JSON = ("tiny-train", "200")


def _run_document(runs: Any) -> dict[str, Any]:
    return json.loads(runs.run(*RUN_JSON).read_text(encoding="utf-8"))


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_check_leaderboard_and_site_survive_any_run_json(runs, tmp_path, data):
    content = data.draw(mutated(_run_document(runs)))
    _fuzz_result_file(runs, tmp_path, content, RUN_JSON, lambda run_json: run_json)


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_check_survives_any_units_file(runs, tmp_path, data):
    entry = _run_document(runs)["metrics"]["clip"]
    units = runs.run(*RUN_JSON).parent / entry["units"]
    content = data.draw(mutated(json.loads(units.read_text(encoding="utf-8"))))
    _fuzz_result_file(runs, tmp_path, content, RUN_JSON, lambda run_json: run_json.parent / entry["units"])


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_check_and_site_survive_any_score_records(runs, tmp_path, data):
    """One line of a metric's per-image records replaced (check re-derives its units from them)."""
    entry = _run_document(runs)["metrics"]["clip"]
    records = runs.run(*RUN_JSON).parent / entry["records"]
    lines = records.read_bytes().splitlines(keepends=True)
    index = data.draw(st.integers(0, len(lines) - 1))
    replacement = data.draw(mutated(json.loads(lines[index])))
    content = b"".join([*lines[:index], replacement + b"\n", *lines[index + 1:]])
    _fuzz_result_file(runs, tmp_path, content, RUN_JSON, lambda run_json: run_json.parent / entry["records"])


@FUZZ
@given(text=st.one_of(
    st.text(max_size=400),
    st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30), max_size=8).map("\n".join),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_prompt_files_load_or_are_refused_in_one_line(tmp_path, text):
    from evalkit.prompts.sets import load_prompt_set

    for suffix in (".txt", ".jsonl", ".csv"):
        path = tmp_path / f"prompts{suffix}"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            loaded = load_prompt_set(str(path))
        except EvalkitError as e:
            assert "\n" not in e.one_line()
            continue
        assert len(loaded) >= 1 and all(p.id and p.text for p in loaded)
        assert len({p.id for p in loaded}) == len(loaded)


@st.composite
def mutated_yaml(draw: st.DrawFn, base: dict[str, Any]) -> str:
    """A valid YAML document with a few values replaced; or arbitrary text."""
    import yaml

    if draw(st.integers(0, 3)) == 0:
        return draw(st.text(max_size=300))
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from([p for p in _paths(doc) if p]))
        parent: Any = doc
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = draw(json_values)
    return yaml.safe_dump(doc, allow_unicode=True)


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


SHIPPED_CARD = Path(__file__).resolve().parents[1] / "metrics" / "clip.yaml"


@FUZZ
@given(text=mutated_yaml(_yaml(SHIPPED_CARD)))
def test_metric_cards_are_read_or_refused_in_one_line(tmp_path, text):
    from evalkit.metrics.cards import read_card
    from evalkit.metrics.registry import preflight

    path = tmp_path / "card.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        read_card(path)
        preflight(str(path))
    except EvalkitError as e:
        assert "\n" not in e.one_line()


def _default_thresholds() -> dict[str, Any]:
    from evalkit.gate.thresholds import default_thresholds_path

    return _yaml(default_thresholds_path())


@FUZZ
@given(text=mutated_yaml(_default_thresholds()))
def test_threshold_files_load_or_are_refused_in_one_line(tmp_path, text):
    from evalkit.gate.thresholds import load_thresholds

    path = tmp_path / "thresholds.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_thresholds(path)
    except EvalkitError as e:
        assert "\n" not in e.one_line()


@pytest.fixture(scope="module")
def sharded_step(sd_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A step folder of two finished `--shard` jobs, not yet merged (what `evalkit merge` reads)."""
    from evalkit.tiny.clip import build_tiny_clip, write_card

    root = tmp_path_factory.mktemp("fuzz-shards")
    card = write_card(root / "clip-tiny.yaml", "clip-tiny", "clip_score", "coco-10k",
                      {"clip": build_tiny_clip(root / "tiny-clip")})
    for index in (0, 1):
        code, err = _evalkit("run", str(sd_dir), "--metrics", str(card), "--out", str(root / "out"), "--limit", "4",
                             "--steps", "2", "--batch-size", "2", "--score-batch-size", "2", "--quiet", "--shard",
                             f"{index}/2")
        assert code == 0, err
    return root / "out" / "tiny-sd" / "final"


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_merge_survives_any_shard_report(sharded_step, tmp_path, data):
    """One shard's report replaced by a mutated one: `evalkit merge` merges or refuses in one line, and
    a refusal writes no run.json and consumes no report."""
    step = tmp_path / "step"
    if step.exists():
        shutil.rmtree(step)
    shutil.copytree(sharded_step, step)
    report = step / "shard-1-of-2.json"
    report.write_bytes(data.draw(mutated(json.loads(report.read_text(encoding="utf-8")))))
    code, err = _evalkit("merge", str(step), "--quiet")
    event(f"merge exit {code}")
    _one_line_refusal(code, err)
    if code != 0:
        assert not (step / "run.json").exists()
        assert sorted(p.name for p in step.glob("shard-*.json")) == ["shard-0-of-2.json", "shard-1-of-2.json"]
    else:
        assert (step / "run.json").is_file() and not list(step.glob("shard-*.json"))
