"""`evalkit leaderboard`: boards by comparability, one row per model, idempotent and concurrent merges."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sitefixtures import (
    CLIP_FP,
    CLIP_V2_FP,
    PROTOCOL_50,
    XSS_MODEL,
    Runs,
    protocol,
    write_runs,
    write_step,
    write_wide_runs,
)

from evalkit.errors import EvalkitError
from evalkit.publishing.entry import Efficiency, Entry
from evalkit.publishing.leaderboard import leaderboard_document, merge_runs
from evalkit.publishing.store import load_entries, merge_entries
from evalkit.results.run import read_run

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def runs(tmp_path: Path) -> Runs:
    return write_runs(tmp_path)


def _document(folder: Path) -> dict:
    return json.loads((folder / "leaderboard.json").read_text(encoding="utf-8"))


def _board_with(document: dict, model: str) -> dict:
    return next(b for b in document["boards"] if any(r["model"] == model for r in b["rows"]))


def _row(board: dict, model: str) -> dict:
    return next(r for r in board["rows"] if r["model"] == model)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_merges_into_separate_boards_with_one_row_per_model(runs: Runs, tmp_path: Path, cli: Cli) -> None:
    into = tmp_path / "lb"
    code, out, err = cli("leaderboard", str(runs.out), "--into", str(into))
    assert code == 0, err
    assert "8 added" in out
    document = _document(into)
    assert document["schema_version"] == "evalkit.leaderboard/1"
    assert document["select"] == "latest"
    assert len(document["boards"]) == 3

    main = document["boards"][0]  # the board with the most models comes first
    assert [r["model"] for r in main["rows"]] == ["sd-final", "tiny-train", XSS_MODEL, "eff-small"]
    assert [r["rank"] for r in main["rows"]] == [1, 2, 3, 4]
    assert main["primary"] == "clip"
    assert [m["name"] for m in main["metrics"]] == ["clip", "fid"]
    assert main["key"]["protocol_fingerprint"] == protocol(PROTOCOL_50)["fingerprint"]
    assert main["key"]["metrics"]["clip"] == {"fingerprint": CLIP_FP,
                                              "prompt_set_fingerprint": runs.prompt_set_fingerprint}
    train = _row(main, "tiny-train")
    assert (train["step"], train["step_label"]) == (300, "300")  # latest, not best
    assert train["metrics"]["clip"] == {"value": 0.25, "ci95": [0.23, 0.27], "n": 4}
    assert train["run"] == "../out/tiny-train/300/run.json"  # relative to the leaderboard folder
    assert "fid" not in _row(main, XSS_MODEL)["metrics"]  # it has no FID: blank, never borrowed from elsewhere
    assert _row(main, "sd-final")["efficiency"]["parameters"] == 1_300_000_000

    # Another protocol, and the same protocol with another CLIP fingerprint: their own boards.
    fast = _board_with(document, "fast-sampler")
    v2 = _board_with(document, "clip-v2-model")
    assert len({main["id"], fast["id"], v2["id"]}) == 3
    assert [r["model"] for r in fast["rows"]] == ["fast-sampler"]
    assert fast["key"]["protocol_fingerprint"] != main["key"]["protocol_fingerprint"]
    assert [r["model"] for r in v2["rows"]] == ["clip-v2-model"]
    assert v2["key"]["metrics"]["clip"]["fingerprint"] == CLIP_V2_FP
    assert len({b["title"] for b in document["boards"]}) == 3

    for board in document["boards"]:
        assert board["csv"] == f"boards/{board['id']}.csv"
        rows = list(csv.DictReader(io.StringIO((into / board["csv"]).read_text(encoding="utf-8"))))
        assert [r["model"] for r in rows] == [r["model"] for r in board["rows"]]
    main_csv = list(csv.DictReader(io.StringIO((into / main["csv"]).read_text(encoding="utf-8"))))
    assert main_csv[1]["clip"] == "0.25" and main_csv[1]["clip_ci95_low"] == "0.23" and main_csv[1]["step"] == "300"
    assert main_csv[0]["parameters"] == "1300000000" and main_csv[1]["parameters"] == ""


def test_store_keeps_aggregates_and_the_run_path_not_records(runs: Runs, tmp_path: Path) -> None:
    merge_runs([runs.out], tmp_path / "lb")
    entries = load_entries(tmp_path / "lb")
    assert len(entries) == 8
    entry = next(e for e in entries if e.model == "tiny-train" and e.step_label == "200")
    assert entry.run == str(runs.run("tiny-train", "200"))  # absolute in memory
    stored = entry.to_json(tmp_path / "lb")
    assert stored["run"] == "../out/tiny-train/200/run.json"  # relative to the store on disk
    clip = stored["metrics"]["clip"]
    assert clip["records"].startswith("scores/clip/")  # with `run`, enough for `check` to find the records
    assert (Path(entry.run).parent / clip["records"]).is_file()
    assert "values" not in clip and "card" not in clip
    assert clip["by_category"]["category"]["animals"]["n"] == 2
    size = (tmp_path / "lb" / "entries.json").stat().st_size
    records = sum(p.stat().st_size for p in runs.out.rglob("scores/*/*.jsonl"))
    assert size < 30_000 and records > 0


def test_best_uses_the_primary_metric_and_its_direction(runs: Runs, tmp_path: Path, cli: Cli) -> None:
    into = tmp_path / "lb"
    assert cli("leaderboard", str(runs.out), "--into", str(into), "--select", "best")[0] == 0
    document = _document(into)
    assert document["select"] == "best"
    assert _row(document["boards"][0], "tiny-train")["step"] == 200  # best CLIP (higher is better)

    code, _, err = cli("leaderboard", "--into", str(into), "--select", "best", "--by", "fid")
    assert code == 0, err
    document = _document(into)
    main = document["boards"][0]
    assert main["primary"] == "fid"
    assert _row(main, "tiny-train")["step"] == 300  # lowest FID
    assert [r["model"] for r in main["rows"]] == ["sd-final", "tiny-train", "eff-small", XSS_MODEL]
    assert _row(main, XSS_MODEL)["rank"] is None  # no FID: listed last, unranked
    assert _board_with(document, "fast-sampler")["primary"] == "clip"  # boards without FID keep their first metric

    code, _, err = cli("leaderboard", "--into", str(into), "--by", "nosuch")
    assert code == 2 and "no board has the metric 'nosuch'" in err and "clip, fid" in err


def test_merging_again_changes_nothing_and_order_does_not_matter(runs: Runs, tmp_path: Path) -> None:
    once = tmp_path / "once"
    merge_runs([runs.out], once)
    before = _snapshot(once)
    mtimes = {p: p.stat().st_mtime_ns for p in once.rglob("*.json")}
    result = merge_runs([runs.out], once)
    assert result.counts == {"added": 0, "updated": 0, "unchanged": 8, "kept": 0}
    assert result.written == []
    assert _snapshot(once) == before
    assert {p: p.stat().st_mtime_ns for p in once.rglob("*.json")} == mtimes

    # Model by model, in reverse order, with one run.json given directly: the same bytes.
    pieces = tmp_path / "pieces"
    for model_dir in sorted(runs.out.iterdir(), reverse=True):
        merge_runs([model_dir], pieces)
    merge_runs([runs.run("tiny-train", "200")], pieces)
    assert _snapshot(pieces) == before


def test_concurrent_merges_from_two_processes_both_land(runs: Runs, tmp_path: Path) -> None:
    """Two processes merge disjoint runs at the same moment; each holds its read-merge-write open
    for a while (a slowed load), so without the lock the second writer would drop the first's entries."""
    child = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "import evalkit.publishing.leaderboard as lb\n"
        "go, into, runs = Path(sys.argv[1]), Path(sys.argv[2]), [Path(p) for p in sys.argv[3:]]\n"
        "load = lb.load_entries\n"
        "def slow(folder):\n"
        "    entries = load(folder)\n"
        "    time.sleep(0.5)\n"
        "    return entries\n"
        "lb.load_entries = slow\n"
        "while not go.exists():\n"
        "    time.sleep(0.002)\n"
        "lb.merge_runs(runs, into)\n"
    )
    models = sorted(runs.out.iterdir())
    first, second = models[::2], models[1::2]
    into, go = tmp_path / "lb", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", child, str(go), str(into), *map(str, group)],
                              stderr=subprocess.PIPE, text=True) for group in (first, second)]
    time.sleep(0.3)  # both imported and waiting
    started = time.monotonic()
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert time.monotonic() - started >= 1.0  # the two 0.5 s windows ran one after the other

    entries = load_entries(into)
    assert {e.model for e in entries} == {"tiny-train", "sd-final", XSS_MODEL, "eff-small", "clip-v2-model",
                                             "fast-sampler"}
    assert len(entries) == 8
    assert not list(into.glob(".*.tmp"))
    sequential = tmp_path / "sequential"
    merge_runs([runs.out], sequential)
    assert _snapshot(into) == _snapshot(sequential)


def test_a_rewritten_run_json_replaces_its_entry(runs: Runs, tmp_path: Path) -> None:
    into = tmp_path / "lb"
    merge_runs([runs.out], into)
    path = runs.run("sd-final", "final")
    run = json.loads(path.read_text(encoding="utf-8"))
    run["metrics"]["clip"]["value"] = 0.5
    path.write_text(json.dumps(run), encoding="utf-8")
    result = merge_runs([path], into)
    assert result.counts["updated"] == 1
    assert _row(_document(into)["boards"][0], "sd-final")["metrics"]["clip"]["value"] == 0.5


def test_the_same_checkpoint_from_two_folders_keeps_the_later_run(runs: Runs, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(runs.out / "sd-final", copy / "sd-final")
    copied = copy / "sd-final" / "final" / "run.json"
    run = json.loads(copied.read_text(encoding="utf-8"))
    run["provenance"]["finished"] = "2026-12-01T00:00:00+00:00"
    run["metrics"]["clip"]["value"] = 0.33
    copied.write_text(json.dumps(run), encoding="utf-8")
    one, two = tmp_path / "one", tmp_path / "two"
    merge_runs([runs.out], one)
    merge_runs([copy], one)
    merge_runs([copy], two)
    result = merge_runs([runs.out], two)
    assert result.counts["kept"] == 1
    assert _snapshot(one) == _snapshot(two)
    assert _row(_document(one)["boards"][0], "sd-final")["run"] == "../copy/sd-final/final/run.json"


def test_same_checkpoint_under_two_protocols_keeps_both(runs: Runs, tmp_path: Path) -> None:
    other = Runs(tmp_path / "other", runs.prompt_file, runs.prompt_set, runs.prompt_set_fingerprint)
    write_step(other, "sd-final", None, protocol({**PROTOCOL_50, "guidance_scale": 3.0}), {"clip": 0.29})
    into = tmp_path / "lb"
    merge_runs([runs.out, other.out], into)
    entries = [e for e in load_entries(into) if e.model == "sd-final"]
    assert len(entries) == 2
    boards = [b for b in _document(into)["boards"] if any(r["model"] == "sd-final" for r in b["rows"])]
    assert len(boards) == 2


def test_user_errors_are_one_line_with_exit_code_2(runs: Runs, tmp_path: Path, cli: Cli) -> None:
    code, _, err = cli("leaderboard", str(tmp_path / "missing"), "--into", str(tmp_path / "lb"))
    assert code == 2 and err.startswith("error: ") and "does not exist" in err and len(err.strip().splitlines()) == 1

    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("leaderboard", str(empty), "--into", str(tmp_path / "lb"))
    assert code == 2 and "no run.json under" in err

    code, _, err = cli("leaderboard", "--into", str(tmp_path / "nothing"))
    assert code == 2 and "holds no results yet" in err

    bad = tmp_path / "bad" / "m" / "final" / "run.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"schema_version": "evalkit.run/0"}), encoding="utf-8")
    code, _, err = cli("leaderboard", str(bad), "--into", str(tmp_path / "lb"))
    assert code == 2 and "schema_version is 'evalkit.run/0'" in err
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(EvalkitError, match="not readable JSON"):
        read_run(bad)
    assert not (tmp_path / "lb" / "entries.json").exists()


def test_entries_hold_finite_numbers_and_a_cost_summary(runs: Runs) -> None:
    run = read_run(runs.run("sd-final", "final"))
    run = replace(run, metrics={**run.metrics, "clip": replace(run.metrics["clip"], value=float("nan"))})
    entry = Entry.from_run(run, runs.run("sd-final", "final"))
    assert entry.to_json(runs.out)["metrics"]["clip"]["value"] is None
    assert entry.to_json(runs.out)["efficiency"] == {"parameters": 1_300_000_000, "gmacs_per_image": 41_000.0,
                                   "denoiser_gmacs": 410.0, "resolution": 64, "seconds_per_image": 2.5,
                                   "images_per_second": 0.4, "peak_memory_bytes": 3 * 2**30,
                                   "device": "NVIDIA H100"}
    assert Efficiency.from_profile(None).to_json() == {} and Efficiency.from_profile({"latency": None}).to_json() == {}
    document = leaderboard_document(merge_entries([], [entry])[0], runs.out)
    assert document["boards"][0]["rows"][0]["rank"] is None
    json.dumps(document, allow_nan=False)


def test_fixture_runs_follow_the_run_json_schema(runs: Runs) -> None:
    """The fixtures stand in for real run.json files, so they must satisfy the contract's schema."""
    import jsonschema

    from evalkit.results.run import schema_path

    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    for path in runs.run_files.values():
        document = json.loads(path.read_text(encoding="utf-8"))
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
        assert errors == [], path
        assert read_run(path).to_json() == document


def test_the_store_reads_back_to_the_same_bytes(runs: Runs, tmp_path: Path) -> None:
    """Entries are typed in memory; reading entries.json and writing it again changes no byte."""
    from evalkit.publishing.store import entries_text

    into = tmp_path / "lb"
    merge_runs([runs.out], into)
    text = (into / "entries.json").read_text(encoding="utf-8")
    assert entries_text(load_entries(into), into) == text
    entries = load_entries(into)
    assert all(isinstance(e, Entry) for e in entries)
    assert [Entry.from_json(e.to_json(into), into) for e in entries] == entries


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d["entries"][0].pop("protocol"), "entries[0].protocol is missing"),
    (lambda d: d["entries"][1]["metrics"]["clip"].update(n="two"), "entries[1].metrics.clip.n is not an integer"),
    (lambda d: d["entries"][0]["efficiency"].update(watts=3), "entries[0].efficiency is invalid"),
    (lambda d: d.update(entries={}), "entries is not a list"),
])
def test_a_garbled_store_is_one_line_naming_the_field(runs: Runs, tmp_path: Path, cli: Cli, edit: Any,
                                                      field: str) -> None:
    into = tmp_path / "lb"
    merge_runs([runs.out], into)
    path = into / "entries.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["entries"].sort(key=lambda e: "efficiency" not in e)  # entry 0 has a cost summary
    edit(document)
    path.write_text(json.dumps(document), encoding="utf-8")
    before = path.read_bytes()
    code, _, err = cli("leaderboard", "--into", str(into))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{path} is garbled: {field}" in err and "merge the runs again" in err
    assert path.read_bytes() == before


def test_a_published_leaderboard_names_no_local_path_and_moves_with_its_runs(runs: Runs, tmp_path: Path,
                                                                            cli) -> None:
    into = tmp_path / "lb"
    merge_runs([runs.out], into)
    for path in into.rglob("*"):
        if path.is_file():
            assert str(tmp_path) not in path.read_text(encoding="utf-8"), path
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    tmp_path.rename(moved)
    try:
        entries = load_entries(moved / "lb")
        assert {Path(e.run) for e in entries} == {moved / "out" / p.relative_to(tmp_path / "out")
                                                  for p in runs.run_files.values()}
        assert all(Path(e.run).is_file() for e in entries)
    finally:
        moved.rename(tmp_path)


def test_an_older_store_with_absolute_run_paths_is_still_read(runs: Runs, tmp_path: Path) -> None:
    into = tmp_path / "lb"
    merge_runs([runs.out], into)
    document = json.loads((into / "entries.json").read_text(encoding="utf-8"))
    for entry in document["entries"]:
        entry["run"] = str((into / entry["run"]).resolve())
    (into / "entries.json").write_text(json.dumps(document), encoding="utf-8")
    assert {e.run for e in load_entries(into)} == {str(p) for p in runs.run_files.values()}
    merge_runs([], into)  # rewriting migrates it to relative paths
    assert all(not Path(e["run"]).is_absolute()
               for e in json.loads((into / "entries.json").read_text(encoding="utf-8"))["entries"])


def test_a_board_ranks_by_the_headline_metric_unless_told_otherwise(tmp_path: Path) -> None:
    runs = write_wide_runs(tmp_path)
    board = merge_runs([runs.out], tmp_path / "lb").document["boards"][0]
    assert board["primary"] == "tifa"  # declared headline, though clip-l14 comes first by name
    assert [m["name"] for m in board["metrics"] if m["headline"]] == ["tifa"]
    assert board["rows"][0]["model"] == "stabilityai/stable-diffusion-2-1-base"  # best TIFA
    by_fid = merge_runs([runs.out], tmp_path / "lb2", by="fid").document["boards"][0]
    assert by_fid["primary"] == "fid" and by_fid["rows"][0]["model"] == "sd-2-1-finetuned-on-laion-aesthetics-6.5plus"
    for path in runs.run_files.values():  # runs without the field (older evalkit): the first by name
        run = json.loads(path.read_text(encoding="utf-8"))
        del run["metrics"]["tifa"]["headline"]
        path.write_text(json.dumps(run), encoding="utf-8")
    assert merge_runs([runs.out], tmp_path / "lb3").document["boards"][0]["primary"] == "clip-l14"


def test_headline_is_presentation_not_part_of_a_cards_fingerprint(tmp_path: Path) -> None:
    from evalkit.metrics.cards import read_card, shipped_cards

    shipped = shipped_cards()
    assert shipped["tifa"].headline and not shipped["clip"].headline
    text = Path(shipped["tifa"].path).read_text(encoding="utf-8").replace("headline: true", "headline: false")
    (tmp_path / "tifa.yaml").write_text(text, encoding="utf-8")
    plain = read_card(tmp_path / "tifa.yaml")
    assert not plain.headline and plain.fingerprint() == shipped["tifa"].fingerprint()
