"""Prompt sets: built-in content, fingerprints, integrity checks, user files and the CLI."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pickle
import shutil
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

from evalkit.cli.prompts import prompts as prompts_cli
from evalkit.errors import EvalkitError
from evalkit.prompts.sets import (
    Prompt,
    PromptSet,
    builtin_names,
    generated_id,
    list_prompt_sets,
    load_prompt_set,
    prompt_set_fingerprint,
)
from evalkit.runtime.datafiles import shipped_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SHARED = Path(os.environ.get("EVALKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"upstream data not at {SHARED}")

# Pinned on purpose: a change here invalidates every cached result keyed on these sets.
FINGERPRINTS = {
    "coco-10k": "e53465a3f76daf4506671b39bfaabe4661ebad8a9af82e9a22526b3a9cb393b3",
    "dsg-1k": "926d7210e9c0",
    "imagereward-benchmark": "87a5a1f5ea34",
    "partiprompts": "61bdb5db7756",
    "tifa-v1.0": "4666b9422487",
    "tifa-v1.0-sample": "51bf2ad8aebb",
}
SIZES = {
    "coco-10k": 10_000,
    "dsg-1k": 1060,
    "imagereward-benchmark": 100,
    "partiprompts": 1632,
    "tifa-v1.0": 4081,
    "tifa-v1.0-sample": 2,
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def build_script() -> ModuleType:
    path = shipped_dir("prompts") / "build_prompt_sets.py"
    spec = importlib.util.spec_from_file_location("build_prompt_sets", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8"))
    return path


def problem_of(excinfo: pytest.ExceptionInfo[EvalkitError]) -> str:
    return excinfo.value.problem


# --------------------------------------------------------------------------- built-ins


def test_builtin_list_matches_manifests_and_pinned_fingerprints() -> None:
    infos = {i.name: i for i in list_prompt_sets()}
    assert sorted(infos) == sorted(SIZES) == builtin_names()
    for name, info in infos.items():
        assert info.n == SIZES[name]
        assert info.fingerprint.startswith(FINGERPRINTS[name])
        assert info.version == "1" and info.source.startswith("https://github.com/") and info.licence


@pytest.mark.parametrize("name", sorted(SIZES))
def test_builtin_loads_and_fingerprint_is_stable(name: str) -> None:
    first, second = load_prompt_set(name), load_prompt_set(name)
    assert len(first) == SIZES[name]
    assert first.fingerprint == second.fingerprint
    assert first.fingerprint.startswith(FINGERPRINTS[name])
    assert first.fingerprint == prompt_set_fingerprint(name, "1", first.prompts)
    assert len({p.id for p in first}) == len(first)
    assert all(p.text.strip() for p in first)


def test_tifa_sources_ids_and_order() -> None:
    tifa = load_prompt_set("tifa-v1.0")
    assert Counter(p.tags for p in tifa) == {
        ("coco",): 2000,
        ("partiprompt",): 1420,
        ("paintskill",): 500,
        ("drawbench",): 161,
    }
    first = tifa.prompts[0]
    assert first.id == "coco_301091"
    assert first.text == "On a gray day a surfer carrying a white board walks on a beach."
    assert first.data["coco_val_id"] == "380711"
    assert sum("coco_val_id" in p.data for p in tifa) == 2000
    assert all(p.id.startswith(p.tags[0] + "_") for p in tifa)


@needs_shared
def test_tifa_keeps_upstream_ids_and_text_verbatim() -> None:
    upstream = json.loads((SHARED / "tifa_v1.0" / "tifa_v1.0_text_inputs.json").read_text(encoding="utf-8"))
    tifa = load_prompt_set("tifa-v1.0")
    assert [(p.id, p.text) for p in tifa] == [(e["id"], e["caption"]) for e in upstream]


def test_tifa_sample() -> None:
    sample = load_prompt_set("tifa-v1.0-sample")
    assert [p.id for p in sample] == ["coco_301091", "drawbench_52"]
    assert sample.by_id("drawbench_52").text == "Three cats and two dogs sitting on the grass."
    assert sample.by_id("drawbench_52").tags == ("drawbench",)


def test_coco_10k_content() -> None:
    coco = load_prompt_set("coco-10k")
    first = coco.prompts[0]
    assert first.id == "coco_137507"
    assert first.data["coco_image_id"] == 137507
    assert first.data["coco_file"] == "COCO_val2014_000000137507.jpg"
    assert all(p.tags == ("coco",) and p.id == f"coco_{p.data['coco_image_id']}" for p in coco)
    assert len({p.data["coco_image_id"] for p in coco}) == 10_000


@needs_shared
def test_coco_10k_redraw_equals_shipped_list() -> None:
    script = build_script()
    rows = script.read_table(SHARED / "coco2014" / "coco_30k.csv", ",")
    drawn = script.draw_coco_10k(rows, seed=20240101)
    shipped = load_prompt_set("coco-10k")
    assert [(int(r["image_id"]), r["prompt"]) for r in drawn] == [
        (p.data["coco_image_id"], p.text) for p in shipped
    ]
    # A different seed must give a different draw, or the test above proves nothing.
    other = script.draw_coco_10k(rows, seed=1)
    assert [r["image_id"] for r in other[:20]] != [r["image_id"] for r in drawn[:20]]


@needs_shared
def test_build_script_reproduces_every_shipped_file(tmp_path: Path) -> None:
    script = build_script()
    sets = script.build_all(SHARED)
    assert sorted(sets) == builtin_names()
    assert script.differences(shipped_dir("prompts"), sets) == []
    script.write_sets(tmp_path, {"coco-10k": sets["coco-10k"]})
    assert load_prompt_set(str(tmp_path / "coco-10k")).fingerprint == load_prompt_set("coco-10k").fingerprint


def test_partiprompts_and_imagereward() -> None:
    parti = load_prompt_set("partiprompts")
    assert [p.id for p in parti][:2] == ["parti_0001", "parti_0002"] and parti.prompts[-1].id == "parti_1632"
    assert parti.prompts[0].tags == ("Abstract", "Basic")
    assert parti.prompts[0].data["note"] == "Biology-inspired concepts with multiple meanings"
    ir = load_prompt_set("imagereward-benchmark")
    assert ir.prompts[0].id == "005695-0057" and ir.prompts[0].text == "a concept art of a vehicle, cyberpunk"


def test_shipped_folders_have_licence_notes() -> None:
    for name in builtin_names():
        note = (shipped_dir("prompts") / name / "LICENSE-NOTE.txt").read_text(encoding="utf-8")
        assert "Changes by evalkit" in note and "Source:" in note
    assert (shipped_dir("prompts") / "tifa-v1.0-sample" / "questions.json").is_file()


# --------------------------------------------------------------------------- the data model


def small_set(texts: tuple[str, ...] = ("a cat", "a dog", "a bird")) -> PromptSet:
    prompts = tuple(Prompt(f"id{i}", t, ("t",), {"k": i}) for i, t in enumerate(texts))
    return PromptSet("small", "1", "here", "none", prompts)


def test_fingerprint_follows_content() -> None:
    base = small_set()
    assert small_set().fingerprint == base.fingerprint
    assert small_set(("a cat", "a dog", "a birds")).fingerprint != base.fingerprint
    first, rest = base.prompts[0], base.prompts[1:]
    changed = [
        dataclasses.replace(base, name="other"),
        dataclasses.replace(base, version="2"),
        dataclasses.replace(base, prompts=(dataclasses.replace(first, tags=("u",)), *rest)),
        dataclasses.replace(base, prompts=(dataclasses.replace(first, data={"k": 9}), *rest)),
        dataclasses.replace(base, prompts=tuple(reversed(base.prompts))),
    ]
    assert len({base.fingerprint, *(c.fingerprint for c in changed)}) == 6
    # Source and licence do not change what is generated, so they do not change the fingerprint.
    assert dataclasses.replace(base, source="elsewhere", licence="MIT").fingerprint == base.fingerprint


def test_head_and_select_get_their_own_fingerprint() -> None:
    base = small_set()
    head = base.head(2)
    assert [p.id for p in head] == ["id0", "id1"] and head.name == "small"
    assert head.fingerprint != base.fingerprint
    assert head.fingerprint == prompt_set_fingerprint("small", "1", base.prompts[:2])
    assert base.head(10).fingerprint == base.fingerprint
    picked = base.select(["id2", "id0"])
    assert [p.id for p in picked] == ["id2", "id0"]
    with pytest.raises(EvalkitError, match="no prompt"):
        base.select(["id0", "nope"])
    with pytest.raises(EvalkitError, match="more than once"):
        base.select(["id0", "id0"])
    with pytest.raises(EvalkitError, match="no prompt with id 'id11'") as excinfo:
        base.by_id("id11")
    assert "did you mean 'id1'" in excinfo.value.hint
    with pytest.raises(EvalkitError):
        base.head(-1)


def test_prompts_are_immutable_hashable_and_picklable() -> None:
    prompt = small_set().prompts[1]
    assert prompt.data["k"] == 1
    with pytest.raises(TypeError):
        prompt.data["k"] = 2  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        prompt.text = "x"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(prompt)) == prompt
    assert hash(prompt) == hash(dataclasses.replace(prompt))
    with pytest.raises(ValueError, match="duplicate"):
        PromptSet("s", "1", "", "", (Prompt("a", "x"), Prompt("a", "y")))


# --------------------------------------------------------------------------- integrity


def copy_set(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(shipped_dir("prompts") / name, target)
    return target


def test_edited_data_file_is_refused(tmp_path: Path) -> None:
    folder = copy_set(tmp_path, "tifa-v1.0-sample")
    assert load_prompt_set(str(folder)).fingerprint == load_prompt_set("tifa-v1.0-sample").fingerprint
    data = folder / "prompts.jsonl"
    data.write_text(data.read_text(encoding="utf-8").replace("surfer", "skier"), encoding="utf-8")
    with pytest.raises(EvalkitError, match="corrupted") as excinfo:
        load_prompt_set(str(folder))
    assert "reinstall" in excinfo.value.hint


def test_manifest_fingerprint_mismatch_is_refused(tmp_path: Path) -> None:
    folder = copy_set(tmp_path, "tifa-v1.0-sample")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["fingerprint"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(EvalkitError, match="does not match its manifest"):
        load_prompt_set(str(folder))


# --------------------------------------------------------------------------- user files


def test_txt_file(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.txt", "a red car\r\n[blue] bird\n\n")
    pset = load_prompt_set(str(path))
    assert [p.text for p in pset] == ["a red car", "[blue] bird"]
    assert (pset.name, pset.version, pset.source, pset.licence) == (
        "mine",
        "user",
        str(path.resolve()),
        "unknown (user file)",
    )
    assert pset.prompts[0].id == generated_id("a red car") and len(pset.prompts[0].id) == 13
    # Inserting a line must not renumber the others.
    grown = load_prompt_set(str(write(tmp_path, "mine.txt", "a new one\na red car\n[blue] bird\n")))
    assert grown.by_id(pset.prompts[1].id).text == "[blue] bird"
    assert grown.fingerprint != pset.fingerprint


def test_jsonl_file(tmp_path: Path) -> None:
    lines = [
        {"id": "x1", "text": "a cat", "tags": ["animal"], "seed": 3},
        {"prompt": "a dog"},
        {"caption": "a bird", "id": 7},
    ]
    path = write(tmp_path, "set.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    pset = load_prompt_set(str(path))
    assert [p.id for p in pset] == ["x1", generated_id("a dog"), "7"]
    assert pset.by_id("x1").tags == ("animal",) and dict(pset.by_id("x1").data) == {"seed": 3}


def test_csv_file(tmp_path: Path) -> None:
    path = write(tmp_path, "set.csv", 'id,Prompt,style\nc1,"a cat, sitting",photo\n,a dog,\n')
    pset = load_prompt_set(str(path))
    assert [(p.id, p.text) for p in pset] == [("c1", "a cat, sitting"), (generated_id("a dog"), "a dog")]
    assert pset.by_id("c1").data["style"] == "photo"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.txt", "one\n\nthree\n", "a.txt:2: empty prompt"),
        ("a.txt", "one\n   \ntwo", "a.txt:2: empty prompt"),
        ("a.txt", "", "contains no prompts"),
        ("a.txt", "same\nother\nsame\n", "a.txt:3: duplicate prompt id"),
        ("a.jsonl", '{"text": "ok"}\n{"text": "broken"\n', "a.jsonl:2: malformed JSON"),
        ("a.jsonl", '{"text": "ok"}\n{"words": "no text"}\n', "a.jsonl:2: has no text key"),
        ("a.jsonl", '{"text": "ok", "prompt": "too"}\n', "a.jsonl:1: has more than one text key"),
        (
            "a.jsonl",
            '{"text": "a", "id": "p"}\n{"text": "b", "id": "p"}\n',
            "a.jsonl:2: duplicate prompt id 'p'",
        ),
        ("a.jsonl", '{"text": ""}\n', "a.jsonl:1: empty prompt"),
        ("a.jsonl", '["a list"]\n', "a.jsonl:1: expected a JSON object"),
        ("a.jsonl", '{"text": "x", "id": "../../etc"}\n', "a.jsonl:1: prompt id '../../etc' is not allowed"),
        ("a.csv", "words,id\nhello,1\n", "a.csv:2: has no text column"),
        ("a.csv", "text\n", "contains no prompts"),
        ("a.csv", 'text\nfine\n""\n', "a.csv:3: empty prompt"),
        ("a.csv", "text,id\nx,1,extra\n", "a.csv:2: row has 3 fields"),
        ("a.csv", "text\nx\n\ny\n", "a.csv:3: empty line"),
        ("a.txt", "ok\n" + "x" * 1_000_001 + "\n", "a.txt:2: prompt is 1,000,001 characters long (at most 20,000)"),
        ("a.jsonl", '{"text": "' + "y" * 20_001 + '"}\n', "a.jsonl:1: prompt is 20,001 characters long"),
    ],
)
def test_user_file_errors_name_file_and_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(EvalkitError) as excinfo:
        load_prompt_set(str(path))
    assert message in problem_of(excinfo)
    assert "\n" not in excinfo.value.one_line()


def test_duplicate_text_hint_mentions_the_text(tmp_path: Path) -> None:
    with pytest.raises(EvalkitError) as excinfo:
        load_prompt_set(str(write(tmp_path, "d.txt", "same\nsame\n")))
    assert "first at" in excinfo.value.problem and "same prompt text" in excinfo.value.hint


def test_missing_file_unknown_extension_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(EvalkitError, match="not found"):
        load_prompt_set(str(tmp_path / "nope.txt"))
    with pytest.raises(EvalkitError, match=r"unsupported prompt file type '\.json'"):
        load_prompt_set(str(write(tmp_path, "p.json", "[]")))
    with pytest.raises(EvalkitError, match=r"without a manifest\.json"):
        load_prompt_set(str(tmp_path))
    with pytest.raises(EvalkitError) as excinfo:
        load_prompt_set("coco10k")
    assert "unknown prompt set 'coco10k'" in excinfo.value.problem
    assert "did you mean 'coco-10k'" in excinfo.value.hint and "tifa-v1.0" in excinfo.value.hint


# --------------------------------------------------------------------------- CLI


def test_cli_list() -> None:
    result = CliRunner().invoke(prompts_cli, ["list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name, fingerprint in FINGERPRINTS.items():
        assert name in result.output and fingerprint[:12] in result.output
    assert "10000" in result.output


def test_cli_show_table_and_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(prompts_cli, ["show", "partiprompts", "--limit", "2"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "parti_0001" in result.output and "parti_0002" in result.output
    assert "parti_0003" not in result.output
    assert "Abstract, Basic" in result.output and "showing the first 2 of 1632" in result.output
    whole, part = load_prompt_set("partiprompts"), load_prompt_set("partiprompts").head(2)
    assert part.fingerprint[:12] in result.output and whole.fingerprint[:12] in result.output

    result = CliRunner().invoke(prompts_cli, ["show", "tifa-v1.0-sample", "--json"])
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [r["id"] for r in records] == ["coco_301091", "drawbench_52"]
    assert records[0]["tags"] == ["coco"]

    path = write(tmp_path, "m.txt", "[bold]not markup[/bold]\n")
    result = CliRunner().invoke(prompts_cli, ["show", str(path)], terminal_width=200)
    assert result.exit_code == 0 and "[bold]not markup[/bold]" in result.output


def test_cli_errors_propagate_as_evalkit_error() -> None:
    result = CliRunner().invoke(prompts_cli, ["show", "tifa-v1"])
    assert isinstance(result.exception, EvalkitError)
    assert "unknown prompt set 'tifa-v1'" in result.exception.problem
    result = CliRunner().invoke(prompts_cli, ["show", "tifa-v1.0", "--limit", "-1"])
    assert result.exit_code == 2 and "-1" in result.output


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_a_prompt_file_that_is_not_utf8_is_one_line(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"prompts{suffix}"
    path.write_bytes(b"text\nok\n\xff\xfe bad\n" if suffix == ".csv" else b"ok\n\xff\xfe bad\n")
    with pytest.raises(EvalkitError, match=r"is not UTF-8 text \(invalid start byte at byte \d+\)") as caught:
        load_prompt_set(str(path))
    assert "save the file as UTF-8" in caught.value.hint and "\n" not in caught.value.one_line()
