"""Scale-out: torchrun ranks and `--shard i/N` arrays give the run.json of one process.

Real torch.distributed (gloo) under the real torchrun launcher, real tiny metric models for CLIP,
FID, TIFA, ImageReward and HPSv2. Shards take whole scoring batches (plan_samples' blocks), so
with the same batch sizes a sharded run computes the very batches one process computes and its
run.json and record files must be identical, not just close — except for clocks and the
recorded layout (provenance.shards).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkit.evaluation.split import CHECKPOINTS, SAMPLES, choose
from evalkit.generation.generator import plan_samples
from evalkit.generation.protocol import GenerationRequest
from evalkit.prompts.sets import load_prompt_set
from evalkit.stepdir import StepDir

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
EVALKIT = [sys.executable, "-m", "evalkit.cli"]
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
VOLATILE = {"started", "finished", "seconds", "images_per_second", "shards"}


@pytest.fixture(scope="module")
def cards(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Tiny-model cards of every metric (the demo's), and FID's synthetic COCO folder."""
    from evalkit.evaluation.demo import build_demo_cards, coco_dir

    models = tmp_path_factory.mktemp("metric-models")
    written = build_demo_cards(models, list(load_prompt_set("coco-10k").head(5)))
    return ",".join(str(p) for p in written), coco_dir(models)


def _args(sd_dir: Path, out: Path, cards: tuple[str, Path], *extra: str) -> list[str]:
    specs, coco = cards
    return ["run", str(sd_dir), "--metrics", specs, "--coco-images", str(coco), "--out", str(out), "--limit", "5",
            "--steps", "2", "--batch-size", "2", "--score-batch-size", "4", "--quiet", *extra]


def _torchrun(nproc: int, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", str(nproc), "-m", "evalkit.cli", *args],
                          env=ENV, capture_output=True, text=True, timeout=600)


def _comparable(run_json: Path) -> dict[str, object]:
    doc = json.loads(run_json.read_text(encoding="utf-8"))
    doc["provenance"] = {k: v for k, v in doc["provenance"].items() if k not in VOLATILE}
    return doc


def _record_files(step: Path) -> dict[str, bytes]:
    return {p.relative_to(step).as_posix(): p.read_bytes() for p in sorted((step / "scores").rglob("*.jsonl"))}


@pytest.fixture(scope="module")
def reference(sd_dir: Path, cards: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process, the same request: the step folder every layout must reproduce."""
    out = tmp_path_factory.mktemp("one-process")
    done = subprocess.run([*EVALKIT, *_args(sd_dir, out, cards)], env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return out / "tiny-sd" / "final"


# -- the plan: whole blocks, dealt in turn ------------------------------------------------------------

def test_shards_take_whole_scoring_batches_and_together_the_whole_plan():
    sets = [load_prompt_set("coco-10k").head(7), load_prompt_set("tifa-v1.0").head(3)]
    request = GenerationRequest(images_per_prompt=2)
    whole = [s.file for s in plan_samples(sets, request)]
    blocks = [whole[i:min(i + 4, 14)] for i in range(0, 14, 4)] + [whole[14 + i:14 + i + 4] for i in range(0, 6, 4)]
    assert sum(map(len, blocks)) == len(whole) == 20  # coco 14 = 4+4+4+2, tifa 6 = 4+2: a set's tail is short
    for count in (2, 3, 5):
        shards = [[s.file for s in plan_samples(sets, request, i, count, block=4)] for i in range(count)]
        assert sorted(f for shard in shards for f in shard) == sorted(whole)
        assert len({f for shard in shards for f in shard}) == len(whole)  # disjoint
        for n, block in enumerate(blocks):  # every block is one shard's, dealt in turn
            assert all(f in shards[n % count] for f in block)
    assert [s.file for s in plan_samples(sets, request, 1, 3, block=1)] == whole[1::3]  # block 1: round robin


def test_auto_split_compares_the_two_estimates():
    assert choose("auto", 8, 1000, 4).mode == CHECKPOINTS  # 2 even rounds beat loading every checkpoint 4 times
    assert choose("auto", 5, 14081, 4).mode == SAMPLES  # a second round for one checkpoint costs more
    assert choose("auto", 1, 100, 2).mode == SAMPLES  # one checkpoint can only be shared by samples
    assert choose("samples", 8, 1000, 4).mode == SAMPLES and choose("checkpoints", 5, 14081, 4).mode == CHECKPOINTS
    plan = choose("auto", 48, 14081, 8)
    assert plan.checkpoints_cost == 6 * (16 + 14081) and plan.samples_cost == 48 * (16 + 1761)


# -- torchrun: 2 and 3 ranks ---------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("ranks", [2, 3])
def test_torchrun_ranks_write_the_run_json_of_one_process(sd_dir, cards, reference, tmp_path, ranks):
    out = tmp_path / "out"
    done = _torchrun(ranks, _args(sd_dir, out, cards))
    assert done.returncode == 0, done.stderr[-3000:]
    step = out / "tiny-sd" / "final"
    assert _comparable(step / "run.json") == _comparable(reference / "run.json")
    assert _record_files(step) == _record_files(reference)  # the shards' records, folded, byte for byte
    shards = json.loads((step / "run.json").read_text())["provenance"]["shards"]
    n_images = json.loads((reference / "run.json").read_text())["provenance"]["n_images"]
    assert shards["count"] == ranks and sum(shards["images"]) == n_images and len(set(shards["images"])) > 1  # uneven
    assert not StepDir(step).shard_reports()  # consumed by the merge
    assert sorted(p.name for p in step.glob("manifest*.jsonl")) == [
        f"manifest.shard-{i}-of-{ranks}.jsonl" for i in range(ranks)]  # per-rank files only


@pytest.mark.slow
def test_a_killed_rank_leaves_its_work_and_the_rerun_finishes_only_the_rest(sd_dir, cards, tmp_path):
    """SIGKILL rank 1 while it generates (its pid is in its generate lock); torchrun tears the launch down;
    the same command again reuses every image either rank finished and ends in one process's run.json."""
    common = ["--metrics", cards[0].split(",")[0], "--limit", "16", "--steps", "8", "--batch-size", "1",
              "--score-batch-size", "2", "--quiet"]
    reference = tmp_path / "reference"
    one = subprocess.run([*EVALKIT, "run", str(sd_dir), "--out", str(reference), *common], env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    out = tmp_path / "out"
    command = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "evalkit.cli", "run", str(sd_dir), "--out",
               str(out), *common]
    launch = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    step = StepDir(out / "tiny-sd" / "final")
    manifest, lock = step.manifest(1, 2), step.path / ".generate.shard-1-of-2.lock"
    deadline = time.time() + 300
    while time.time() < deadline and launch.poll() is None:
        if manifest.is_file() and len(manifest.read_text().splitlines()) >= 2 and lock.is_file():
            break
        time.sleep(0.05)
    assert launch.poll() is None, "the launch finished before rank 1 could be killed"
    os.kill(json.loads(lock.read_text().splitlines()[0])["pid"], signal.SIGKILL)
    assert launch.wait(timeout=300) != 0
    kept = {json.loads(line)["file"] for line in manifest.read_text().splitlines() if line.strip()}
    assert 2 <= len(kept) < 8 and not step.run_json.exists()
    again = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = [json.loads(line)["file"] for line in manifest.read_text().splitlines() if line.strip()]
    assert len(rows) == len(set(rows)) == 8  # rank 1's 8 images, the killed run's never made again
    assert kept <= set(rows)
    assert _comparable(step.run_json) == _comparable(reference / "tiny-sd" / "final" / "run.json")


@pytest.mark.slow
def test_split_by_checkpoints_spreads_a_training_folder_and_writes_the_curves_once(train_dir, cards, tmp_path):
    specs = cards[0].split(",")[0]
    args = ["run", str(train_dir), "--metrics", specs, "--out", str(tmp_path / "out"), "--limit", "3", "--steps", "2",
            "--batch-size", "2", "--quiet", "--split", "checkpoints"]
    done = _torchrun(2, args)
    assert done.returncode == 0, done.stderr[-3000:]
    model = tmp_path / "out" / train_dir.name
    steps = sorted(p.parent.name for p in model.glob("*/run.json"))
    assert len(steps) >= 2
    for step in steps:  # each checkpoint evaluated whole by one rank: no shard files, no layout recorded
        assert "shards" not in json.loads((model / step / "run.json").read_text())["provenance"]
        assert not list((model / step).glob("*shard*"))
    assert "split by checkpoints" in done.stdout
    assert done.stdout.count("curves: ") == 1 and (model / "curves" / "clip-tiny.csv").is_file()


# -- --shard i/N without a launcher, then `evalkit merge` ------------------------------------------------

@pytest.fixture
def sharded(sd_dir, cards, tmp_path) -> Path:
    """Shards 0/2 and 1/2 run as two separate jobs of an array would (one thread each, as the reference)."""
    out = tmp_path / "array"
    for index in (0, 1):
        done = subprocess.run([*EVALKIT, *_args(sd_dir, out, cards, "--shard", f"{index}/2")], env=ENV,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert f"shard-{index}-of-2.json" in done.stdout
    step = out / "tiny-sd" / "final"
    assert not (step / "run.json").exists()
    return step


@pytest.mark.slow
def test_merge_of_an_array_gives_the_run_json_of_one_process(sharded, reference, cli):
    """The merge job runs with one thread, as the reference did: BLAS threads change the last bits of
    FID's bootstrap (matrix square roots), in one process as in a merge."""
    done = subprocess.run([*EVALKIT, "merge", str(sharded.parent.parent)], env=ENV, capture_output=True, text=True,
                          timeout=600)  # the --out folder: every step below it
    assert done.returncode == 0, done.stderr
    assert "merged 2 shards" in done.stdout
    assert _comparable(sharded / "run.json") == _comparable(reference / "run.json")
    assert _record_files(sharded) == _record_files(reference)
    code, out, _ = cli("merge", str(sharded))
    assert code == 0 and "nothing to merge" in out


def _refused(cli, step: Path, *needles: str) -> None:
    code, out, err = cli("merge", str(step))
    assert code == 2, (out, err)
    line = err.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in err
    for needle in needles:
        assert needle in line, line
    assert not (step / "run.json").exists()  # nothing written


def _edit(report: Path, **changes: object) -> None:
    doc = json.loads(report.read_text())
    doc.update(changes)
    report.write_text(json.dumps(doc))


@pytest.mark.slow
def test_merge_refuses_missing_duplicated_and_mismatched_shards_naming_the_shard(sharded, cli):
    report = StepDir(sharded).shard_report(1, 2)
    original = report.read_bytes()
    report.unlink()
    _refused(cli, sharded, "shard 1/2", "has not finished")
    report.write_bytes(original)

    shutil.copy(report, sharded / "shard-0-of-3.json")  # another layout's report beside this one's
    _refused(cli, sharded, "2 layouts", "of 2: 0, 1", "of 3: 0")
    (sharded / "shard-0-of-3.json").unlink()

    first = json.loads(StepDir(sharded).shard_report(0, 2).read_text())["files"][0]
    _edit(report, files=[*json.loads(original)["files"], first])
    _refused(cli, sharded, first, "claimed by shards 0/2 and 1/2")
    report.write_bytes(original)

    _edit(report, checkpoint_fingerprint="0" * 64)
    _refused(cli, sharded, "shard 1/2", "other weights")
    report.write_bytes(original)

    _edit(report, protocol_fingerprint="1" * 64)
    _refused(cli, sharded, "shard 1/2", "another protocol")
    report.write_bytes(original)

    doc = json.loads(original)
    name = sorted(doc["metrics"])[0]
    doc["metrics"][name]["fingerprint"] = "2" * 64
    report.write_text(json.dumps(doc))
    _refused(cli, sharded, "shard 1/2", f"scored {name} with another card or model")
    report.write_bytes(original)

    records = sorted((sharded / "scores").rglob("*.shard-1-of-2.jsonl"))[0]
    moved = records.with_suffix(".away")
    records.rename(moved)
    _refused(cli, sharded, "have no", "(shard 1/2)")
    moved.rename(records)

    code, _, err = cli("merge", str(sharded))  # everything back as the shards left it: merged
    assert code == 0, err
    assert (sharded / "run.json").is_file() and not StepDir(sharded).shard_reports()


@pytest.mark.slow
def test_an_array_over_a_training_folder_is_merged_with_its_curves(train_dir, cards, tmp_path, cli):
    out = tmp_path / "out"
    specs = cards[0].split(",")[0]
    for index in (0, 1):
        code, _, err = cli("run", str(train_dir), "--metrics", specs, "--out", str(out), "--limit", "3", "--steps",
                           "2", "--batch-size", "2", "--score-batch-size", "2", "--quiet", "--shard", f"{index}/2",
                           "--split", "samples")
        assert code == 0, err
    model = out / train_dir.name
    assert not list(model.glob("*/run.json")) and not (model / "curves").exists()
    code, stdout, err = cli("merge", str(model))
    assert code == 0, err
    assert stdout.count("merged 2 shards") == len(list(model.glob("*/run.json"))) >= 2
    assert (model / "curves" / "clip-tiny.csv").is_file()


# -- launchers that lie ------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _by_hand(sd_dir: Path, out: Path, rank: int, port: int, *extra: str, wait: int = 4) -> subprocess.Popen[str]:
    """A process started as a launcher would start rank `rank` of 2, but by hand."""
    env = {**ENV, "WORLD_SIZE": "2", "RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    return subprocess.Popen([*EVALKIT, "generate", str(sd_dir), "--prompts", "coco-10k", "--limit", "2", "--steps",
                             "2", "--out", str(out), "--rendezvous-timeout", str(wait), "--quiet", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _listening(port: int, proc: subprocess.Popen[str]) -> bool:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def _one_line(proc: subprocess.Popen[str]) -> str:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.slow
def test_one_process_where_the_environment_announces_two_is_refused(sd_dir, tmp_path):
    err = _one_line(_by_hand(sd_dir, tmp_path / "out", 0, _free_port()))
    assert "WORLD_SIZE=2 announces 2 processes but only 1 of 2 joined" in err
    assert not (tmp_path / "out").exists()  # refused before anything was made


@pytest.mark.slow
def test_two_processes_that_both_claim_rank_0_are_refused(sd_dir, tmp_path):
    port = _free_port()
    first = _by_hand(sd_dir, tmp_path / "out", 0, port, wait=20)
    assert _listening(port, first)  # the first holds the rendezvous, waiting for a rank 1
    second = _by_hand(sd_dir, tmp_path / "out", 0, port)
    assert "two processes believe they are the same rank" in _one_line(second)
    assert "only 1 of 2 joined" in _one_line(first)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ranks_started_with_different_arguments_are_refused(sd_dir, tmp_path):
    port = _free_port()
    ranks = [_by_hand(sd_dir, tmp_path / "out", 0, port, wait=60),
             _by_hand(sd_dir, tmp_path / "out", 1, port, "--seed", "3", wait=60)]
    for proc in ranks:
        assert "was started with another command line" in _one_line(proc)
    assert not (tmp_path / "out").exists()


def test_world_size_without_a_launcher_and_shard_under_one_are_refused(cli, sd_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = cli("generate", str(sd_dir), "--prompts", "coco-10k", "--limit", "1", "--out", str(tmp_path / "o"))
    assert code == 2 and "RANK, MASTER_ADDR, MASTER_PORT are not" in err
    code, _, err = cli("generate", str(sd_dir), "--prompts", "coco-10k", "--limit", "1", "--out", str(tmp_path / "o"),
                       "--shard", "0/2")
    assert code == 2 and "--shard is for processes started without a launcher" in err
    assert not (tmp_path / "o").exists()


# -- kill -9 inside `evalkit merge` ------------------------------------------------------------------------

MERGE_KILL_CHILD = """
import os, signal, sys
from evalkit.cli.app import cli
kill_at, before = int(sys.argv[1]), sys.argv[2] == "before"
real, calls = os.fsync, [0]
def fsync(fd):
    calls[0] += 1
    if calls[0] == kill_at and before:
        os.kill(os.getpid(), signal.SIGKILL)
    real(fd)
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
os.fsync = fsync
cli.main(sys.argv[3:], standalone_mode=False)
print("fsyncs", calls[0])
"""


def _merge_child(path: Path, kill_at: int, before: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", MERGE_KILL_CHILD, str(kill_at), "before" if before else "after",
                           "merge", str(path), "--quiet"], env=ENV, capture_output=True, text=True, timeout=300)


def _merged_state(model: Path) -> dict[str, object]:
    steps = sorted(p.parent for p in model.glob("*/generation.json"))
    return {"runs": {s.name: _comparable(s / "run.json") for s in steps},
            "records": {s.name: _record_files(s) for s in steps},
            "curves": {p.name: p.read_bytes() for p in sorted((model / "curves").glob("*.csv"))}
            | {p.name: json.loads(p.read_text()) for p in sorted((model / "curves").glob("*.json"))},
            "reports": [str(p) for s in steps for _, _, p in StepDir(s).shard_reports()],
            "temporaries": [str(p) for p in model.rglob("*.tmp")]}


@pytest.mark.slow
def test_kill_9_at_seeded_durable_writes_of_a_merge_then_merging_again_gives_the_same_results(train_dir, cards,
                                                                                            tmp_path, cli):
    """`evalkit merge` over a training folder's array: every file it writes (folded records, summaries,
    units, run.json per step, then the curves) goes through os.fsync. A seeded sample of kill points,
    just before or just after the N-th one; merging again must give the uninterrupted merge's run.json,
    record files and curves, with every shard report consumed and nothing half-written left."""
    import random

    clip = cards[0].split(",")[0]
    pristine = tmp_path / "pristine"
    for index in (0, 1):
        code, _, err = cli("run", str(train_dir), "--metrics", clip, "--out", str(pristine), "--limit", "3",
                           "--steps", "2", "--batch-size", "2", "--score-batch-size", "2", "--quiet", "--shard",
                           f"{index}/2", "--split", "samples")
        assert code == 0, err
    reference = tmp_path / "reference"
    shutil.copytree(pristine, reference)
    whole = _merge_child(reference / train_dir.name, 0, False)
    assert whole.returncode == 0, whole.stderr
    total = int(whole.stdout.split("fsyncs")[-1])
    expected = _merged_state(reference / train_dir.name)
    assert expected["reports"] == [] and len(expected["runs"]) == 3 and expected["curves"]
    rng = random.Random(20261206)
    points = sorted(rng.sample(range(1, total + 1), k=min(8, total)))
    for index, point in enumerate(points):
        before = bool(index % 2)
        root = tmp_path / f"kill-{point}-{before}"
        shutil.copytree(pristine, root)
        killed = _merge_child(root / train_dir.name, point, before)
        assert killed.returncode == -9, (point, killed.stderr[-2000:])
        again = _merge_child(root / train_dir.name, 0, False)
        assert again.returncode == 0, (point, before, again.stderr[-2000:])
        assert _merged_state(root / train_dir.name) == expected, (point, before)
    assert total >= 12 and len(points) == 8  # 16 today: 3 steps x (records, summary, units, run.json), 4 curve files
