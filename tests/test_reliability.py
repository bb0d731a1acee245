"""Faults a long run on a shared machine meets: a second process on the same folder, a full disk,
temporaries of killed writers, images deleted after run.json, hostile text bound for a spreadsheet.

docs/reliability.md lists each case with the test here that proves it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support import image_files, manifest_hashes

from evalkit.errors import EXIT_FAILED
from evalkit.fileio.csvtext import csv_text, neutral
from evalkit.fileio.lockfile import exclusive
from evalkit.fileio.pngio import is_orphaned, remove_orphaned_temporaries, write_atomic
from evalkit.stepdir import StepDir
from evalkit.tiny.clip import build_tiny_clip, write_card

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("".join(f"a photo of thing number {i}\n" for i in range(6)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def clip_card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clip")
    return write_card(root / "clip-tiny.yaml", "clip-tiny", "clip_score", "coco-10k",
                      {"clip": build_tiny_clip(root / "tiny-clip")})


def _generate_args(sd_dir: Path, out: Path, prompts_file: Path, *extra: str) -> list[str]:
    return ["generate", str(sd_dir), "--out", str(out), "--prompts", str(prompts_file), "--steps", "2",
            "--batch-size", "2", "--quiet", *extra]


def _safe_host() -> str:
    """The host as temporaries spell it (fileio.pngio.write_atomic)."""
    return "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())[:40]


def _no_temporaries(folder: Path) -> bool:
    return not list(folder.rglob("*.tmp"))


# -- two processes, one folder -----------------------------------------------------------------------


def test_a_second_process_on_a_busy_step_folder_is_refused_naming_the_holder(cli, sd_dir, tmp_path, prompts_file):
    out = tmp_path / "out"
    step = StepDir(out / "tiny-sd" / "final")
    with step.lock("generate"):
        code, _, err = cli(*_generate_args(sd_dir, out, prompts_file))
    assert code == EXIT_FAILED
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{step.path} (generate) is in use by pid {os.getpid()} on {socket.gethostname()}" in err
    assert "wait for that process to finish, or pass another --out" in err
    assert not step.read_manifest() and not list(step.path.rglob("*.png"))  # nothing written
    code, _, err = cli(*_generate_args(sd_dir, out, prompts_file))  # released: the same command now runs
    assert code == 0, err
    assert len(step.read_manifest()) == 6


@pytest.mark.slow
def test_two_real_processes_never_both_generate_one_folder(sd_dir, tmp_path):
    """The case found open: two identical runs on one folder both made every image (64 rows for 32
    files). Now the second exits at once naming the first; the first, killed -9 while holding the
    lock, leaves a lock the re-run takes over, and the manifest ends with one row per image."""
    out = tmp_path / "out"
    many = tmp_path / "many.txt"
    many.write_text("".join(f"a photo of thing number {i}\n" for i in range(60)), encoding="utf-8")
    slow = ["generate", str(sd_dir), "--out", str(out), "--prompts", str(many), "--steps", "40",
            "--batch-size", "1", "--quiet"]
    command = [sys.executable, "-m", "evalkit.cli", *slow]
    first = subprocess.Popen(command, env=ENV)
    step = StepDir(out / "tiny-sd" / "final")
    try:
        deadline = time.time() + 240
        while time.time() < deadline and first.poll() is None and not step.read_manifest():
            time.sleep(0.05)
        assert first.poll() is None, "the first run finished before the second could start"
        second = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
        assert first.poll() is None, "the first run finished while the second started: make it slower"
    finally:
        first.kill()
        first.wait()
    assert second.returncode == EXIT_FAILED, second.stderr
    assert f"is in use by pid {first.pid} on {socket.gethostname()}" in second.stderr
    assert second.stderr.count("\n") == 1
    subprocess.run([*command[:-5], "--steps", "40", "--batch-size", "4", "--quiet"], env=ENV, check=True,
                   timeout=600)
    rows = [line for p in step.manifests() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len({json.loads(r)["file"] for r in rows}) == 60 == len(image_files(step.path))
    assert _no_temporaries(step.path)


def test_a_lock_left_by_a_dead_process_is_recovered(cli, sd_dir, tmp_path, prompts_file):
    out = tmp_path / "out"
    step = StepDir(out / "tiny-sd" / "final")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    step.path.mkdir(parents=True)
    lock = step.path / ".generate.lock"
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "command": "evalkit run x",
                                "since": "2026-01-01T00:00:00+00:00"}) + "\n", encoding="utf-8")
    code, _, err = cli(*_generate_args(sd_dir, out, prompts_file))
    assert code == 0, err
    assert lock.read_text(encoding="utf-8") == ""  # taken over, then released: a finished run leaves it empty


def test_score_and_run_json_are_locked_too(cli, sd_dir, tmp_path, prompts_file, clip_card):
    out = tmp_path / "out"
    assert cli(*_generate_args(sd_dir, out, prompts_file, "--prompts", "coco-10k", "--limit", "2"))[0] == 0
    step = StepDir(out / "tiny-sd" / "final")
    with step.lock("score"):
        code, _, err = cli("score", str(step.path), "--metrics", str(clip_card), "--quiet")
    assert code == EXIT_FAILED and "(score) is in use by pid" in err
    assert not step.run_json.exists() and not (step.path / "scores").exists()


def test_a_waiting_lock_waits_its_turn(tmp_path):
    path = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from evalkit.fileio.lockfile import exclusive\n"
        f"with exclusive(Path({str(path)!r}), wait=True, what='x', hint=''):\n"
        "    print('held', flush=True); time.sleep(1.0)\n")], stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with exclusive(path, wait=True, what="x", hint=""):
        waited = time.monotonic() - started
    assert holder.wait(timeout=30) == 0
    assert waited > 0.3  # it blocked until the holder let go (not a timing assertion on speed)


# -- temporaries -------------------------------------------------------------------------------------


def test_only_temporaries_without_a_live_writer_are_removed(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    safe_host = _safe_host()
    files = {
        "live": tmp_path / f".a.png.{safe_host}-{sleeper.pid}.tmp",
        "mine": tmp_path / f".b.png.{safe_host}-{os.getpid()}.tmp",
        "dead": tmp_path / f".c.png.{safe_host}-{int(dead.stdout)}.tmp",
        "old format": tmp_path / ".d.png.1234.tmp",
        "other host, recent": tmp_path / ".e.png.elsewhere-1.tmp",
        "other host, old": tmp_path / ".f.png.elsewhere-2.tmp",
    }
    try:
        for path in files.values():
            path.write_bytes(b"partial")
        two_days_ago = time.time() - 2 * 24 * 3600
        os.utime(files["other host, old"], (two_days_ago, two_days_ago))
        assert {k for k, p in files.items() if is_orphaned(p)} == {"dead", "old format", "other host, old"}
        assert remove_orphaned_temporaries([tmp_path]) == 3
        assert {k for k, p in files.items() if p.exists()} == {"live", "mine", "other host, recent"}
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_failed_atomic_write_leaves_no_temporary_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "run.json"
    target.write_text("old\n", encoding="utf-8")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as caught:
        write_atomic(target, b"new\n")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert target.read_text(encoding="utf-8") == "old\n" and _no_temporaries(tmp_path)


# -- a full disk -------------------------------------------------------------------------------------


class FullDisk:
    """os.fsync that fails with ENOSPC from its `after`-th call on (every write evalkit makes durable
    goes through it: PNGs, manifests, records, run.json, the leaderboard)."""

    def __init__(self, after: int) -> None:
        self.after, self.calls, self.real = after, 0, os.fsync

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.calls >= self.after:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.real(fd)


@pytest.mark.parametrize("after", [1, 4, 7])
def test_a_full_disk_during_generation_is_one_line_and_the_rerun_completes(cli, sd_dir, tmp_path, prompts_file,
                                                                           monkeypatch, after):
    reference = tmp_path / "reference"
    assert cli(*_generate_args(sd_dir, reference, prompts_file))[0] == 0
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", FullDisk(after))
        code, _, err = cli(*_generate_args(sd_dir, out, prompts_file))
    assert code == EXIT_FAILED, err
    assert err.startswith("error: no space left on the device (") and err.count("\n") == 1
    assert "free space (or pass another --out) and re-run: finished work is kept" in err
    step = StepDir(out / "tiny-sd" / "final")
    assert _no_temporaries(out)
    for file, sha in manifest_hashes(step.path).items():  # every row the manifest kept is a whole image
        from evalkit.fileio.hashing import sha256_file

        assert sha256_file(step.path / file) == sha
    code, _, err = cli(*_generate_args(sd_dir, out, prompts_file))
    assert code == 0, err
    assert manifest_hashes(step.path) == manifest_hashes(reference / "tiny-sd" / "final")


def test_a_full_disk_while_scoring_keeps_no_half_result(cli, sd_dir, tmp_path, clip_card, monkeypatch):
    out = tmp_path / "out"
    args = ("run", str(sd_dir), "--metrics", str(clip_card), "--out", str(out), "--limit", "3", "--steps", "2",
            "--quiet")
    assert cli(*args)[0] == 0
    step = StepDir(out / "tiny-sd" / "final")
    expected = json.loads(step.run_json.read_text(encoding="utf-8"))["metrics"]["clip-tiny"]["value"]
    step.run_json.unlink()
    for records in (step.path / "scores").rglob("*"):
        if records.is_file():
            records.unlink()
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", FullDisk(1))
        code, _, err = cli(*args)
    assert code == EXIT_FAILED and err.startswith("error: no space left on the device (")
    assert not step.run_json.exists() and _no_temporaries(out)
    code, _, err = cli(*args)
    assert code == 0, err
    assert json.loads(step.run_json.read_text(encoding="utf-8"))["metrics"]["clip-tiny"]["value"] == expected


def test_a_full_disk_in_the_leaderboard_keeps_the_old_store(cli, tmp_path, monkeypatch):
    from sitefixtures import write_runs

    runs = write_runs(tmp_path)
    into = tmp_path / "lb"
    assert cli("leaderboard", str(runs.out / "tiny-train"), "--into", str(into))[0] == 0
    before = (into / "entries.json").read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", FullDisk(1))
        code, _, err = cli("leaderboard", str(runs.out), "--into", str(into))
    assert code == EXIT_FAILED and err.startswith("error: no space left on the device (")
    assert (into / "entries.json").read_bytes() == before and _no_temporaries(into)
    # a kill just before a rename leaves a temporary; the next merge (under the store's lock) drops it
    leftover = into / f".entries.json.{_safe_host()}-999999999.tmp"
    leftover.write_text("{", encoding="utf-8")
    (into / "boards" / ".x.csv.old-format.tmp").write_text("partial", encoding="utf-8")
    assert cli("leaderboard", str(runs.out), "--into", str(into))[0] == 0
    assert _no_temporaries(into)


# -- the skip check ----------------------------------------------------------------------------------


def test_a_step_whose_images_were_deleted_or_truncated_is_evaluated_again(cli, sd_dir, tmp_path, clip_card):
    out = tmp_path / "out"
    args = ("run", str(sd_dir), "--metrics", str(clip_card), "--out", str(out), "--limit", "3", "--steps", "2",
            "--quiet")
    assert cli(*args)[0] == 0
    code, stdout, _ = cli(*args)
    assert code == 0 and "already evaluated" in stdout
    step = StepDir(out / "tiny-sd" / "final")
    images = sorted(image_files(step.path).values())
    hashes = manifest_hashes(step.path)
    images[0].unlink()
    images[1].write_bytes(images[1].read_bytes()[:-20])
    code, stdout, err = cli(*args)
    assert code == 0, err
    assert "already evaluated" not in stdout and "2 generated, 1 reused of 3" in stdout
    assert manifest_hashes(step.path) == hashes  # the same bytes again: the records are reused
    assert "(n=3; 0 scored, 3 reused)" in stdout


# -- CSV ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cell", "shown"), [
    ("=HYPERLINK(\"http://x\",\"y\")", "'=HYPERLINK(\"http://x\",\"y\")"), ("+1+1", "'+1+1"), ("-2+3", "'-2+3"),
    ("@SUM(A1)", "'@SUM(A1)"), ("\tcmd", "'\tcmd"), ("\rcmd", "'\rcmd"),
    ("-0.25", "-0.25"), ("+3", "+3"), ("-inf", "-inf"), ("tiny-sd", "tiny-sd"), ("", ""),
])
def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(cell, shown):
    assert neutral(cell) == shown
    assert csv_text(["h"], [[cell]]).splitlines()[0] == "h"


def test_board_and_curve_csvs_neutralise_hostile_names(tmp_path):
    import csv
    import io

    from evalkit.publishing.leaderboard import board_csv

    board = {"metrics": [{"name": "clip"}], "rows": [
        {"rank": 1, "model": "=cmd|' /C calc'!A0", "step_label": "@final", "checkpoint_fingerprint": "ab",
         "metrics": {"clip": {"value": -0.5, "ci95": [-0.6, -0.4], "n": 3}}, "run": "-runs/x/run.json"}]}
    rows = list(csv.reader(io.StringIO(board_csv(board))))
    assert rows[1][:4] == ["1", "'=cmd|' /C calc'!A0", "'@final", "ab"]
    assert rows[1][4:8] == ["-0.5", "-0.6", "-0.4", "3"] and rows[1][-1] == "'-runs/x/run.json"


# -- a metric's inputs are checked before the first image -------------------------------------------


@pytest.fixture
def fid_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from evalkit.tiny.fid import write_random_inception

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no cached COCO reference features
    weights = write_random_inception(tmp_path / "inception-random.pth")
    return write_card(tmp_path / "fid-tiny.yaml", "fid-tiny", "fid", "coco-10k", {},
                      params={"weights": str(weights), "n": 2, "kid_subsets": 2, "kid_subset_size": 2},
                      higher_is_better=False)


def _nothing_generated(out: Path) -> bool:
    return not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_fid_without_its_coco_images_is_refused_before_any_image(cli, sd_dir, tmp_path, fid_card):
    out = tmp_path / "out"
    base = ("run", str(sd_dir), "--metrics", str(fid_card), "--out", str(out), "--limit", "2", "--steps", "2",
            "--quiet")
    code, _, err = cli(*base)
    assert code == 2 and err.count("\n") == 1
    assert "FID needs the COCO val2014 images" in err and "--coco-images" in err
    assert _nothing_generated(out)
    empty = tmp_path / "coco"
    empty.mkdir()
    code, _, err = cli(*base, "--coco-images", str(empty))
    assert code == 2 and "is missing from --coco-images" in err and _nothing_generated(out)


def test_fid_with_its_coco_images_runs_and_a_later_run_uses_the_cached_reference(cli, sd_dir, tmp_path, fid_card):
    from evalkit.prompts.sets import load_prompt_set
    from evalkit.tiny.fid import write_synthetic_coco

    coco = write_synthetic_coco(tmp_path / "coco", load_prompt_set("coco-10k").head(2))
    out = tmp_path / "out"
    base = ("run", str(sd_dir), "--metrics", str(fid_card), "--out", str(out), "--limit", "2", "--steps", "2",
            "--quiet")
    code, stdout, err = cli(*base, "--coco-images", str(coco))
    assert code == 0, err
    assert "fid-tiny = " in stdout
    code, _, err = cli(*base, "--out", str(tmp_path / "again"))  # no --coco-images: the cached reference serves
    assert code == 0, err


def test_missing_weights_or_question_files_are_refused_before_any_image(cli, sd_dir, tmp_path, clip_card):
    out = tmp_path / "out"
    broken = write_card(tmp_path / "clip-broken.yaml", "clip-broken", "clip_score", "coco-10k",
                        {"clip": tmp_path / "no-such-folder"})
    code, _, err = cli("run", str(sd_dir), "--metrics", f"{clip_card},{broken}", "--out", str(out), "--limit", "2",
                       "--steps", "2", "--quiet")
    assert code == 2 and "model folder" in err and "does not exist" in err and _nothing_generated(out)
    code, _, err = cli("run", str(sd_dir), "--metrics", "tifa", "--tifa-qa", str(tmp_path / "nowhere.json"),
                       "--out", str(out), "--limit", "2", "--steps", "2", "--quiet")
    assert code == 2 and err.count("\n") == 1 and _nothing_generated(out)
    assert "the TIFA question file" in err and "nowhere.json does not exist" in err


# -- non-finite output ---------------------------------------------------------------------------


@pytest.fixture
def nan_sd(tmp_path: Path, sd_dir: Path) -> Path:
    """The tiny pipeline with NaN in its UNet's output layer: every image comes out NaN (black PNGs)."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nan-sd"
    shutil.copytree(sd_dir, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state["conv_out.bias"] = torch.full_like(state["conv_out.bias"], float("nan"))
    save_file(state, weights)
    return folder


def test_nan_output_is_counted_reported_and_fails_check_unless_allowed(cli, sd_dir, nan_sd, tmp_path, clip_card):
    args = ("--metrics", str(clip_card), "--limit", "3", "--steps", "2", "--quiet", "--name", "m")
    assert cli("run", str(sd_dir), "--out", str(tmp_path / "clean"), *args)[0] == 0
    code, stdout, err = cli("run", str(nan_sd), "--out", str(tmp_path / "nan"), *args)
    assert code == 0, err
    assert "warning: 3 image(s) with NaN/inf output (e.g. images/coco-10k/" in stdout
    step = StepDir(tmp_path / "nan" / "m" / "final")
    assert all(row.nonfinite for row in step.read_manifest().values())
    run = json.loads(step.run_json.read_text(encoding="utf-8"))
    assert run["nonfinite"]["images"] == 3 and len(run["nonfinite"]["examples"]) == 3
    clean = StepDir(tmp_path / "clean" / "m" / "final")
    assert "nonfinite" not in json.loads(clean.run_json.read_text(encoding="utf-8"))  # clean runs: no field
    assert all("nonfinite" not in line for line in (clean.path / "manifest.jsonl").read_text().splitlines())

    code, stdout, _ = cli("check", str(step.run_json), "--baseline", str(clean.run_json))
    assert code == 1
    assert "NaN/inf output" in stdout and "pass --allow-nonfinite to accept it" in stdout
    junit = tmp_path / "junit.xml"
    code, stdout, _ = cli("check", str(step.run_json), "--baseline", str(clean.run_json), "--allow-nonfinite",
                          "--junit", str(junit))
    assert code == 0 and "reported, not failing (--allow-nonfinite)" in stdout
    assert 'name="finite output"' in junit.read_text(encoding="utf-8")


def test_quantised_nan_output_looks_like_an_ordinary_black_png():
    """Why NaN output must be flagged: quantised, it is an ordinary-looking black PNG."""
    from evalkit.generation.generator import quantize

    pixels = quantize(torch.full((1, 3, 2, 2), float("nan")))
    assert int(pixels.max()) == 0


# -- kill -9 at seeded points of a whole run -------------------------------------------------------

KILL_CHILD = """
import os, signal, sys, threading
from evalkit.cli.app import cli
kill_at, before = int(sys.argv[1]), sys.argv[2] == "before"
real, calls, counting = os.fsync, [0], threading.Lock()  # PNGs are written from two threads
def fsync(fd):
    with counting:
        calls[0] += 1
        mine = calls[0]
    if mine == kill_at and before:
        os.kill(os.getpid(), signal.SIGKILL)  # the bytes are written but not yet durable or renamed
    real(fd)
    if mine == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # durable, not yet renamed or followed by its manifest row
os.fsync = fsync
args = sys.argv[3:]
split = args.index("--then")
cli.main(args[:split], standalone_mode=False)
cli.main(args[split + 1:], standalone_mode=False)
print("fsyncs", calls[0])
"""


def _scrubbed(value):
    """run.json / entries.json without what records when and how fast something ran."""
    volatile = {"provenance", "finished", "started", "seconds", "images_per_second"}
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items() if k not in volatile}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value


def _run_and_merge(sd_dir: Path, root: Path, card: Path, kill_at: int, before: bool) -> subprocess.CompletedProcess:
    out = root / "out"
    command = [sys.executable, "-c", KILL_CHILD, str(kill_at), "before" if before else "after",
               "run", str(sd_dir), "--metrics", str(card), "--out", str(out), "--limit", "4", "--steps", "2",
               "--batch-size", "2", "--quiet", "--then", "leaderboard", str(out), "--into", str(root / "lb")]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)


def _outcome(root: Path) -> dict[str, object]:
    step = StepDir(root / "out" / "tiny-sd" / "final")
    rows = [json.loads(line) for p in step.manifests() for line in p.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    return {"images": manifest_hashes(step.path), "rows": len(rows),
            "files": sorted(image_files(step.path)),
            "run": _scrubbed(json.loads(step.run_json.read_text(encoding="utf-8"))),
            "entries": _scrubbed(json.loads((root / "lb" / "entries.json").read_text(encoding="utf-8"))),
            "temporaries": [str(p) for p in root.rglob("*.tmp")]}


@pytest.mark.slow
def test_kill_9_at_seeded_points_then_rerun_gives_the_uninterrupted_result(sd_dir, tmp_path, clip_card):
    """Kill points are the durable writes themselves (every PNG, manifest append, score record,
    units, summary, run.json and leaderboard file goes through os.fsync): the child kills itself
    just before or just after the N-th one. A seeded sample of N over the whole run, then a re-run
    of the same commands, must give exactly the uninterrupted images, rows, run.json and entries."""
    import random

    reference = _run_and_merge(sd_dir, tmp_path / "reference", clip_card, 0, False)
    assert reference.returncode == 0, reference.stderr
    total = int(reference.stdout.split("fsyncs")[-1])
    expected = _outcome(tmp_path / "reference")
    assert expected["rows"] == 4 and expected["temporaries"] == []
    rng = random.Random(20261206)
    points = sorted(rng.sample(range(1, total + 1), k=min(8, total)))
    tried = []
    for index, point in enumerate(points):
        before = bool(index % 2)
        root = tmp_path / f"kill-{point}-{'before' if before else 'after'}"
        killed = _run_and_merge(sd_dir, root, clip_card, point, before)
        assert killed.returncode == -9, (point, killed.stderr[-2000:])
        rerun = _run_and_merge(sd_dir, root, clip_card, 0, False)
        assert rerun.returncode == 0, (point, rerun.stderr[-2000:])
        assert _outcome(root) == expected, f"kill point {point} ({'before' if before else 'after'} fsync)"
        tried.append(point)
    assert len(tried) == len(points) == 8 and total >= 12  # 14 durable writes in this run today


def test_a_checkpoint_overwritten_in_place_is_noticed_before_any_image_is_reused(cli, sd_dir, tmp_path,
                                                                                  prompts_file):
    import shutil

    from safetensors.torch import load_file, save_file

    checkpoint = tmp_path / "ckpt"
    shutil.copytree(sd_dir, checkpoint)
    out = tmp_path / "out"
    assert cli(*_generate_args(checkpoint, out, prompts_file))[0] == 0
    before = manifest_hashes(out / "tiny-sd" / "final")
    weights = checkpoint / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state["conv_out.bias"] = state["conv_out.bias"] + 0.5  # retrained in place: same file name, other bytes
    save_file(state, weights)
    code, _, err = cli(*_generate_args(checkpoint, out, prompts_file))
    assert code == 2 and "holds images of different weights (checkpoint fingerprint changed)" in err
    assert manifest_hashes(out / "tiny-sd" / "final") == before  # nothing reused, nothing overwritten


# -- out of memory (simulated on CPU) ----------------------------------------------------------------


class _Limited:
    """A metric whose score_batch runs out of memory above `fits` images (as `error` says it)."""

    def __init__(self, metric, fits: int, error: type[BaseException] | None, message: str) -> None:
        self.metric, self.fits, self.error, self.message, self.sizes = metric, fits, error, message, []

    def __getattr__(self, name):
        return getattr(self.metric, name)

    def score_batch(self, items, prepared):
        self.sizes.append(len(items))
        if self.error is not None and len(items) > self.fits:
            raise self.error(self.message)
        return self.metric.score_batch(items, prepared)


@pytest.fixture
def scored_step(cli, sd_dir, tmp_path, clip_card):
    out = tmp_path / "out"
    assert cli(*_generate_args(sd_dir, out, tmp_path / "unused", "--prompts", "coco-10k", "--limit", "6"))[0] == 0
    return out / "tiny-sd" / "final"


@pytest.mark.parametrize(("error", "message"), [
    (torch.OutOfMemoryError, "CUDA out of memory. Tried to allocate 2.00 GiB"),
    (RuntimeError, "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    (RuntimeError, "cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
])
def test_scoring_backs_off_on_out_of_memory_with_the_same_records(scored_step, clip_card, error, message):
    from evalkit.metrics.registry import create
    from evalkit.scoring.engine import score_step
    from evalkit.scoring.store import ScoreStore

    reference = create(str(clip_card))
    plain = score_step(scored_step, [reference], torch.device("cpu"), batch_size=6, quiet=True)[0]
    expected = ScoreStore(scored_step, plain.metric, plain.fingerprint).scored()
    ScoreStore(scored_step, plain.metric, plain.fingerprint).path.unlink()
    limited = _Limited(create(str(clip_card)), fits=2, error=error, message=message)
    result = score_step(scored_step, [limited], torch.device("cpu"), batch_size=6, quiet=True)[0]
    assert limited.sizes == [6, 3, 2, 2, 2]  # halved until it fitted, then kept at what fitted
    # the same records, up to the float rounding of batched matmuls (a batch's other members change it)
    assert result.values.keys() == plain.values.keys()
    assert result.values["value"] == pytest.approx(plain.values["value"], rel=1e-6)
    backed_off = ScoreStore(scored_step, plain.metric, plain.fingerprint).scored()
    assert backed_off.keys() == expected.keys()
    for key, records in expected.items():
        assert [r["value"] for r in backed_off[key]] == pytest.approx([r["value"] for r in records], rel=1e-5)


def test_scoring_out_of_memory_at_one_image_is_one_line_and_other_errors_are_not_swallowed(scored_step, clip_card):
    from evalkit.errors import EvalkitError
    from evalkit.metrics.registry import create
    from evalkit.scoring.engine import score_step

    never = _Limited(create(str(clip_card)), fits=0, error=torch.OutOfMemoryError, message="CUDA out of memory")
    with pytest.raises(EvalkitError) as caught:
        score_step(scored_step, [never], torch.device("cpu"), batch_size=4, quiet=True)
    assert "out of memory scoring one image with clip-tiny on cpu (batch size 1)" in caught.value.one_line()
    broken = _Limited(create(str(clip_card)), fits=0, error=RuntimeError, message="shape mismatch: a bug")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        score_step(scored_step, [broken], torch.device("cpu"), batch_size=4, quiet=True)
    assert broken.sizes == [4]  # a bug is not retried smaller


def test_generation_backs_off_on_a_cublas_allocation_failure(sd_dir, small_sets, generate, tmp_path, monkeypatch):
    from diffusers import UNet2DConditionModel

    original = UNet2DConditionModel.forward

    def forward(self, sample, *args, **kwargs):
        if sample.shape[0] > 4:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
        return original(self, sample, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", forward)
    result = generate(sd_dir, small_sets, out=tmp_path / "auto", auto_batch=True)[0]
    assert result.batch_size == 2 and result.generated == len(small_sets[0]) + len(small_sets[1])
