"""The mPLUG backend without the reference venv: converter, loader refusals, batching, the TIFA card path.

Parity with modelscope's own code is tests/test_parity_mplug.py; here the tiny converted checkpoint
(`evalkit.tiny.mplug.write_tiny_mplug`: random weights in modelscope's key layout, then converted)
runs through the same loader and answer loop a real mPLUG-large takes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evalkit.errors import EvalkitError
from evalkit.metrics.tifa.mplug_convert import SOURCE_WEIGHTS, convert_mplug
from evalkit.metrics.tifa.vqa import load_vqa_backend
from evalkit.metrics.tifa.vqa_mplug import decode_answer
from evalkit.tiny.mplug import write_tiny_mplug


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_mplug(tmp_path_factory.mktemp("mplug") / "mplug")


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(5)
    return [Image.fromarray(rng.integers(0, 256, (24 + 8 * i, 40, 3), dtype=np.uint8)) for i in range(n)]


def test_answers_do_not_depend_on_the_other_rows_of_a_call(tiny: Path) -> None:
    backend = load_vqa_backend("mplug", tiny, max_rows=32)
    images = _images(3)
    questions = [["what is the color of the cat?", "how many dogs?"], ["is there a man?"], ["what is this?"] * 3]
    together = backend.answer(images, questions)
    alone = [backend.answer([im], [qs])[0] for im, qs in zip(images, questions, strict=True)]
    one_row = load_vqa_backend("mplug", tiny, max_rows=1).answer(images, questions)
    assert together == alone == one_row
    assert all(isinstance(a, str) and a for answers in together for a in answers)
    assert len({a for answers in together for a in answers}) > 1  # the answers depend on the input


def test_decode_follows_berts_clean_up() -> None:
    assert decode_answer(["two", "?", "man", "##s"]) == "two? mans"
    assert decode_answer(["it", "'", "s", "red", ",", "yes", "."]) == "it's red, yes."  # " ' " -> "'"
    assert decode_answer(["do", "n't", "[unused3]"]) == "don't [unused3]"
    assert decode_answer(["he", "'s"]) == "he's"


def test_the_converter_and_loader_refuse_in_one_line(tiny: Path, tmp_path: Path) -> None:
    source = tiny.with_name(tiny.name + "-modelscope")
    doc = json.loads((tiny / "config.json").read_text(encoding="utf-8"))
    assert doc["format"] == "evalkit-mplug/1" and len(doc["source"][SOURCE_WEIGHTS]) == 64
    with pytest.raises(EvalkitError, match="holds no safetensors weights") as caught:
        load_vqa_backend("mplug-large", source)  # modelscope's own folder, not converted
    assert "mplug_convert" in caught.value.hint
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.safetensors").write_bytes(b"")
    with pytest.raises(EvalkitError, match="is not a converted mPLUG folder"):
        load_vqa_backend("mplug", tmp_path / "half")
    with pytest.raises(EvalkitError, match="needs a checkpoint"):
        load_vqa_backend("mplug-large")
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    state = torch.load(broken / SOURCE_WEIGHTS, weights_only=True)
    state.pop("visn_fc.weight")
    torch.save({"model": state}, broken / SOURCE_WEIGHTS)  # wrapped as some checkpoints are
    with pytest.raises(ValueError, match=r"missing \['visn_fc.weight'\]"):
        convert_mplug(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    (broken / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match=r"no config\.yaml"):
        convert_mplug(broken, tmp_path / "out")
    from evalkit.metrics.tifa.mplug_convert import main

    assert main([str(broken), str(tmp_path / "out")]) == 2  # the command line: one line, no traceback
    assert main([]) == 2 and not (tmp_path / "out").exists()


def test_a_tifa_card_with_the_mplug_backend_scores_and_records_it(tiny: Path, tmp_path: Path) -> None:
    from evalkit.metrics.api import ImageItem
    from evalkit.metrics.cards import read_card
    from evalkit.metrics.context import NO_INPUTS
    from evalkit.metrics.tifa.metric import TifaMetric
    from evalkit.prompts.sets import load_prompt_set
    from evalkit.tiny.clip import write_card
    from evalkit.tiny.tifa_models import write_tiny_mpnet

    write_tiny_mpnet(tmp_path / "mpnet")
    card = write_card(tmp_path / "tifa-mplug.yaml", "tifa-mplug-tiny", "tifa", "tifa-v1.0-sample",
                      {"vqa": tiny, "sentence": tmp_path / "mpnet"},
                      params={"vqa_backend": "mplug-large", "questions": "sample"})
    metric = TifaMetric(read_card(card), NO_INPUTS)
    metric.setup(torch.device("cpu"))
    prompts = list(load_prompt_set("tifa-v1.0-sample"))
    items, prepared = [], []
    for i, (prompt, image) in enumerate(zip(prompts, _images(len(prompts)), strict=True)):
        path = tmp_path / f"{i}.png"
        image.save(path)
        items.append(ImageItem("tifa-v1.0-sample", prompt, 0, path.name, path, "0" * 64))
        prepared.append(metric.prepare(items[-1], image))
    records = metric.score_batch(items, prepared)
    asked = metric.questions()
    assert [len(r) for r in records] == [len(asked[p.id]) for p in prompts]
    assert metric.models_used()["vqa"]["backend"] == "mplug-large"
