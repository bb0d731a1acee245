"""Named prompt subsets (`--subset smoke`): the shipped file is reproducible, verified and applied as documented."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from evalkit.errors import EvalkitError
from evalkit.prompts import subsets
from evalkit.prompts.sets import load_prompt_set
from evalkit.prompts.subsets import apply_subset, load_subset

BUILDER = Path(__file__).resolve().parents[1] / "prompts" / "build_subsets.py"


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_subsets", BUILDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_regenerating_the_subsets_gives_the_shipped_bytes(builder, tmp_path):
    for name, data in builder.build_all().items():
        assert (subsets.subsets_dir() / name).read_bytes() == data, f"{name} is stale: run prompts/build_subsets.py"
    assert builder.main(["--check"]) == 0
    assert builder.main(["--check", "--out", str(tmp_path)]) == 1


def test_smoke_is_160_tifa_prompts_stratified_by_source_and_the_first_1000_coco_captions():
    smoke = load_subset("smoke")
    tifa, coco = load_prompt_set("tifa-v1.0"), load_prompt_set("coco-10k")
    tifa_ids = smoke["sets"]["tifa-v1.0"]["ids"]
    assert len(tifa_ids) == len(set(tifa_ids)) == 160
    sources = Counter(tifa.by_id(i).tags[0] for i in tifa_ids)
    assert sources == {"coco": 78, "partiprompt": 56, "paintskill": 20, "drawbench": 6}  # 2000:1420:500:161
    assert sources == smoke["sets"]["tifa-v1.0"]["strata"]
    positions = [tifa.prompts.index(tifa.by_id(i)) for i in tifa_ids]
    assert positions == sorted(positions)  # kept in set order
    assert smoke["sets"]["coco-10k"]["ids"] == [p.id for p in coco.prompts[:1000]]
    assert smoke["sets"]["tifa-v1.0"]["seed"] == 20241122


def test_allocation_is_proportional_with_largest_remainders(builder):
    assert builder.allocate({"a": 2000, "b": 1420, "c": 500, "d": 161}, 160) == {"a": 78, "b": 56, "c": 20, "d": 6}
    assert builder.allocate({"a": 1, "b": 1, "c": 1}, 2) == {"a": 1, "b": 1, "c": 0}  # ties: the earlier stratum


def test_a_subset_keeps_the_set_name_but_never_the_fingerprint():
    full = [load_prompt_set("tifa-v1.0"), load_prompt_set("coco-10k")]
    smoke = apply_subset(full, "smoke")
    assert [s.name for s in smoke] == ["tifa-v1.0", "coco-10k"] and [len(s) for s in smoke] == [160, 1000]
    for small, whole in zip(smoke, full, strict=True):
        assert small.fingerprint != whole.fingerprint
        assert small.fingerprint == load_subset("smoke")["sets"][whole.name]["fingerprint"]
        assert small.part_of is not None and small.part_of.fingerprint == whole.fingerprint
        assert small.part_of.n == len(whole) and small.part_of.selection == f"smoke subset ({len(small)} prompts)"
    assert smoke[1].fingerprint == full[1].head(1000).fingerprint  # the same prompts: the same set, by content


def test_subset_mistakes_are_user_errors(monkeypatch, tmp_path):
    with pytest.raises(EvalkitError, match="does not cover prompt set 'partiprompts'"):
        apply_subset([load_prompt_set("partiprompts")], "smoke")
    with pytest.raises(EvalkitError, match="did you mean 'smoke'"):
        load_subset("smoek")
    edited = json.loads((subsets.subsets_dir() / "smoke.json").read_text(encoding="utf-8"))
    edited["sets"]["coco-10k"]["ids"] = edited["sets"]["coco-10k"]["ids"][1:]
    (tmp_path / "smoke.json").write_text(json.dumps(edited), encoding="utf-8")
    monkeypatch.setattr(subsets, "subsets_dir", lambda: tmp_path)
    with pytest.raises(EvalkitError, match="was edited"):
        load_subset("smoke")


def test_generate_subset_option_generates_the_subset(cli, sd_dir, tmp_path):
    out = tmp_path / "out"
    code, _, err = cli("generate", str(sd_dir), "--out", str(out), "--prompts", "tifa-v1.0,coco-10k",
                       "--subset", "smoke", "--limit", "2", "--steps", "2", "--quiet")
    assert code == 0, err
    (generation,) = out.rglob("generation.json")
    recorded = json.loads(generation.read_text(encoding="utf-8"))["prompt_sets"]
    expected = [s.head(2) for s in apply_subset([load_prompt_set("tifa-v1.0"), load_prompt_set("coco-10k")],
                                                "smoke")]
    for pset in expected:
        assert recorded[pset.name]["fingerprint"] == pset.fingerprint and recorded[pset.name]["n"] == 2
        assert recorded[pset.name]["part_of"] == {"fingerprint": load_prompt_set(pset.name).fingerprint,
                                                  "n": len(load_prompt_set(pset.name)),
                                                  "selection": pset.part_of.selection}
        assert pset.part_of.selection.startswith("first 2 of the smoke subset")
    code, _, err = cli("generate", str(sd_dir), "--out", str(out), "--prompts", "partiprompts", "--subset", "smoke")
    assert code == 2 and "does not cover" in err
