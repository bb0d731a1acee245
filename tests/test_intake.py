"""Images made without evalkit, scored by `evalkit score`: an ImageFolder with metadata.jsonl, a CSV
list and a saved `datasets` dataset, through the real metrics (tiny TIFA, CLIP and FID cards), then
`evalkit check` and `evalkit leaderboard` on the run.json they give. Bad input is one line, exit 2,
and an untouched --out."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evalkit.prompts.sets import load_prompt_set
from evalkit.results.run import read_run

Cli = Callable[..., tuple[int, str, str]]
NOTE = "our sampler: DPM++ 20 steps, cfg 6, seed 0, 64 px"


@pytest.fixture(scope="module")
def cards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from evalkit.evaluation.demo import build_demo_cards, coco_dir

    models = tmp_path_factory.mktemp("metric-models")
    written = {p.stem: str(p) for p in build_demo_cards(models, list(load_prompt_set("coco-10k").head(5)))}
    return {**written, "coco": str(coco_dir(models))}


def _image(path: Path, seed: int, fmt: str = "PNG") -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)


def _rows(seed: int) -> list[dict[str, object]]:
    """Two TIFA sample prompts by id, five COCO captions (one by its text alone), two free prompts."""
    tifa = list(load_prompt_set("tifa-v1.0-sample"))
    coco = list(load_prompt_set("coco-10k").head(5))
    rows: list[dict[str, object]] = [{"prompt_set": "tifa-v1.0-sample", "prompt_id": p.id} for p in tifa]
    rows += [{"prompt_set": "coco-10k", "prompt_id": p.id, "prompt": p.text} for p in coco[:4]]
    rows += [{"prompt_set": "coco-10k", "prompt": coco[4].text}]
    rows += [{"prompt": "a red cube on a blue sphere,\nlit from the left"}, {"prompt": "a watercolour fox", "k": 1}]
    for i, row in enumerate(rows):
        row["file_name"] = f"img/{i:02d}.{'jpg' if i == 3 else 'png'}"
        row["_seed"] = seed + i
    return rows


def _image_folder(root: Path, seed: int) -> Path:
    rows = _rows(seed)
    for row in rows:
        _image(root / str(row["file_name"]), int(str(row.pop("_seed"))),
               "JPEG" if str(row["file_name"]).endswith(".jpg") else "PNG")
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def _score(cli: Cli, source: Path, out: Path, cards: dict[str, str], *extra: str) -> tuple[int, str, str]:
    metrics = ",".join([cards["tifa-tiny"], cards["clip-tiny"], cards["fid-tiny"], cards["clip-tiny"] + "@external"])
    return cli("score", str(source), "--metrics", metrics, "--coco-images", cards["coco"], "--out", str(out),
               "--protocol-note", NOTE, "--batch-size", "4", "--quiet", *extra)


def test_image_folder_is_scored_checked_and_ranked(cli: Cli, cards: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = _score(cli, _image_folder(tmp_path / "model-a", 0), out, cards)
    assert code == 0, err
    assert "9 images (imagefolder; 9 copied)" in stdout
    run = read_run(out / "model-a" / "final" / "run.json")
    assert run.protocol.external and run.protocol.to_json()["note"] == NOTE
    assert run.protocol.to_json()["n_images"] == 9 and run.protocol.to_json()["resolution"] == [64, 64]
    assert set(run.metrics) == {"tifa-tiny", "clip-tiny", "fid-tiny", "clip-tiny@external"}
    assert run.metrics["tifa-tiny"].n == 2 and run.metrics["fid-tiny"].n == 5
    assert run.metrics["clip-tiny"].n == 5 and run.metrics["clip-tiny@external"].n == 2
    # run.json names the judge behind each number (a GIT TIFA is not an mPLUG TIFA) and the weights' hashes
    vqa = run.metrics["tifa-tiny"].models["vqa"]
    assert vqa["backend"] == "git" and vqa["source"].endswith("tiny-git") and len(vqa["fingerprint"]) == 64
    assert set(run.metrics["fid-tiny"].models) == {"inception"} and set(run.metrics["clip-tiny"].models) == {"clip"}
    assert run.checkpoint.source["kind"] == "external" and run.checkpoint.fingerprint == \
        run.protocol.to_json()["images_sha256"]
    # the JPEG keeps its bytes and suffix; the free prompts live in the step folder
    step = out / "model-a" / "final"
    assert [p.suffix for p in (step / "images" / "coco-10k").iterdir()].count(".jpg") == 1
    assert len(list((step / "prompts").glob("external.jsonl"))) == 1

    # scoring again reuses every record (nothing copied or scored again)
    code, stdout, err = _score(cli, tmp_path / "model-a", out, cards)
    assert code == 0, err
    assert "0 copied" in stdout

    # a second external model declared the same way: check compares, the leaderboard ranks them together
    code, _, err = _score(cli, _image_folder(tmp_path / "model-b", 100), out, cards)
    assert code == 0, err
    code, stdout, err = cli("check", str(out / "model-b" / "final"), "--baseline", str(out / "model-a" / "final"),
                            "--max-drop", "tifa-tiny=0.5")
    assert code in (0, 1), err
    assert "tifa-tiny" in stdout
    board_dir = tmp_path / "board"
    code, _, err = cli("leaderboard", str(out), "--into", str(board_dir))
    assert code == 0, err
    boards = json.loads((board_dir / "leaderboard.json").read_text(encoding="utf-8"))["boards"]
    assert len(boards) == 1 and {r["model"] for r in boards[0]["rows"]} == {"model-a", "model-b"}
    assert all(r["external"].startswith("external images") for r in boards[0]["rows"])


def test_external_results_get_their_own_board_unless_declared_same(cli: Cli, cards: dict[str, str],
                                                                    tmp_path: Path) -> None:
    from sitefixtures import write_runs

    generated = write_runs(tmp_path / "generated").out
    generated_run = generated / "sd-final" / "final" / "run.json"
    out = tmp_path / "out"
    assert _score(cli, _image_folder(tmp_path / "ext", 7), out, cards)[0] == 0
    code, _, err = cli("leaderboard", str(generated), str(out), "--into", str(tmp_path / "b1"))
    assert code == 0, err
    boards = json.loads((tmp_path / "b1" / "leaderboard.json").read_text(encoding="utf-8"))["boards"]
    assert not any({r.get("external") is not None for r in b["rows"]} == {True, False} for b in boards)
    assert any(r["model"] == "ext" for b in boards for r in b["rows"])

    claimed = read_run(generated_run).protocol
    code, _, err = _score(cli, tmp_path / "ext", tmp_path / "out2", cards, "--same-protocol-as", str(generated_run))
    assert code == 0, err
    run = read_run(tmp_path / "out2" / "ext" / "final" / "run.json")
    assert run.protocol.fingerprint == claimed.fingerprint and run.protocol.external
    code, _, err = cli("leaderboard", str(generated), str(tmp_path / "out2"), "--into", str(tmp_path / "b2"))
    assert code == 0, err
    boards = json.loads((tmp_path / "b2" / "leaderboard.json").read_text(encoding="utf-8"))["boards"]
    mixed = [b for b in boards if any("external" in r for r in b["rows"]) and any("external" not in r
                                                                                    for r in b["rows"])]
    assert mixed and mixed[0]["title"].startswith("DDIM")  # the board is described by the evalkit protocol


def test_csv_list_and_saved_dataset(cli: Cli, cards: dict[str, str], tmp_path: Path) -> None:
    folder = _image_folder(tmp_path / "images", 3)
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    listing = folder / "list.csv"
    with listing.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["file_name", "prompt", "prompt_id", "prompt_set", "k"])
        writer.writeheader()
        writer.writerows(rows)
    (folder / "metadata.jsonl").unlink()
    metrics = cards["clip-tiny"] + "," + cards["clip-tiny"] + "@external"
    code, stdout, err = cli("score", str(listing), "--metrics", metrics, "--out", str(tmp_path / "out"),
                            "--protocol-note", NOTE, "--quiet")
    assert code == 0, err
    by_list = read_run(tmp_path / "out" / "list" / "final" / "run.json")

    import datasets

    ds = datasets.Dataset.from_dict({"image": [str(folder / str(r["file_name"])) for r in rows],
                                     "prompt": [r.get("prompt") for r in rows],
                                     "prompt_id": [r.get("prompt_id") for r in rows],
                                     "prompt_set": [r.get("prompt_set") for r in rows],
                                     "k": [r.get("k") for r in rows]}).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "saved"))
    code, stdout, err = cli("score", str(tmp_path / "saved"), "--metrics", metrics, "--out", str(tmp_path / "out"),
                            "--protocol-note", NOTE, "--quiet")
    assert code == 0, err
    assert "9 images (datasets" in stdout
    by_dataset = read_run(tmp_path / "out" / "saved" / "final" / "run.json")
    for name in ("clip-tiny", "clip-tiny@external"):
        assert by_dataset.metrics[name].value == pytest.approx(by_list.metrics[name].value, abs=1e-6)
    assert by_dataset.protocol.to_json()["images_sha256"] == by_list.protocol.to_json()["images_sha256"]


@pytest.mark.parametrize(("breakage", "message"), [
    ("undecodable", "cannot be decoded as an image"),
    ("missing-id", "has no prompt with id 'nope'"),
    ("duplicate", "a second image for prompt"),
    ("wrong-text", "is not the set's text"),
    ("no-note", "need --protocol-note"),
    ("missing-file", "does not exist"),
    ("tifa-elsewhere", "cannot score another prompt set"),
])
def test_bad_input_is_one_line_and_writes_nothing(cli: Cli, cards: dict[str, str], tmp_path: Path, breakage: str,
                                                  message: str) -> None:
    folder = _image_folder(tmp_path / "src", 0)
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    metrics = cards["clip-tiny"]
    note = NOTE
    if breakage == "undecodable":
        (folder / str(rows[5]["file_name"])).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif breakage == "missing-id":
        rows[0]["prompt_id"] = "nope"
    elif breakage == "duplicate":
        rows[1]["prompt_id"] = rows[0]["prompt_id"]
    elif breakage == "wrong-text":
        rows[2]["prompt"] = "a different caption"
    elif breakage == "no-note":
        note = ""
    elif breakage == "missing-file":
        rows[4]["file_name"] = "img/absent.png"
    elif breakage == "tifa-elsewhere":
        metrics = cards["tifa-tiny"] + "@external"
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    code, stdout, err = cli("score", str(folder), "--metrics", metrics, "--out", str(out), "--protocol-note", note,
                            "--quiet")
    assert code == 2, (stdout, err)
    assert message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) <= 2  # the problem, and the fix
    assert not out.exists()


def test_external_options_refused_on_an_evalkit_folder(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    code, _, err = cli("score", str(tmp_path / "runs"), "--metrics", "clip", "--protocol-note", NOTE)
    assert code == 2 and "do not apply" in err
