"""Names read from user files never become paths outside the output folder (issue 12, security).

A prompt-set folder's manifest `name` and a metric card's `name` name folders under a step
folder's images/ and scores/. Each reader refuses a name that could escape (`../../x`, an
absolute path, a NUL byte, a very long name) in one line, before anything is generated; the
step-folder layout refuses them too, so no other caller can build such a path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evalkit.errors import EvalkitError
from evalkit.metrics.cards import read_card
from evalkit.prompts.sets import load_prompt_set
from evalkit.runtime.datafiles import shipped_dir
from evalkit.stepdir import StepDir

HOSTILE = ["../../x", "/tmp/x", "..", ".", "", "a\0b", "a\\b", "x" * 201]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_prompt_set_manifest_name_that_escapes_is_refused(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "set"
    shutil.copytree(shipped_dir("prompts") / "tifa-v1.0-sample", folder)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["name"] = name
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(EvalkitError, match="cannot be a folder name inside the output folder") as excinfo:
        load_prompt_set(str(folder))
    assert "manifest.json: prompt set name" in str(excinfo.value) and "plain name" in excinfo.value.hint
    assert len(str(excinfo.value).splitlines()) == 1


@pytest.mark.parametrize("name", HOSTILE)
def test_a_card_name_that_escapes_is_refused(tmp_path: Path, name: str) -> None:
    card = tmp_path / "card.yaml"
    source = (shipped_dir("metrics") / "clip.yaml").read_text(encoding="utf-8")
    lines = [f"name: {json.dumps(name)}" if line.startswith("name:") else line for line in source.splitlines()]
    card.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(EvalkitError, match="cannot be a folder name inside the output folder") as excinfo:
        read_card(card)
    assert f"metric card {card}: metric name" in str(excinfo.value)
    assert len(str(excinfo.value).splitlines()) == 1


def test_ordinary_names_are_kept_as_they_are(tmp_path: Path) -> None:
    assert read_card(shipped_dir("metrics") / "clip.yaml").name == "clip"
    assert load_prompt_set("tifa-v1.0-sample").name == "tifa-v1.0-sample"
    step = StepDir(tmp_path / "m" / "final")
    assert step.image_file("my set (v2)", "p1", 0) == "images/my set (v2)/p1_0.png"
    assert step.scores("clip", "ab" * 32).records.parent == tmp_path / "m" / "final" / "scores" / "clip"


@pytest.mark.parametrize("name", HOSTILE)
def test_the_step_folder_layout_builds_no_path_outside_it(tmp_path: Path, name: str) -> None:
    step = StepDir(tmp_path / "m" / "final")
    with pytest.raises(EvalkitError, match="prompt set name"):
        step.image_file(name, "p1", 0)
    with pytest.raises(EvalkitError, match="metric name"):
        step.scores(name, "ab" * 32)
