"""VQAScore's refusals and its tiny model (main environment; parity with t2v_metrics is test_parity_vqascore.py)."""

from __future__ import annotations

import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.metrics.clip_t5 import image_token_ids, t5_chat
from evalkit.metrics.registry import create
from evalkit.tiny.clip import write_card
from evalkit.tiny.clip_t5 import write_tiny_clip_t5


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_tiny_clip_t5(tmp_path_factory.mktemp("tiny-clip-t5"))


def _card(tmp_path, models, **params):
    return write_card(tmp_path / f"vq-{len(list(tmp_path.iterdir()))}.yaml", "vqascore-tiny", "vqascore", "coco-10k",
                      models, params={"dtype": "float32", **params})


def test_bad_params_are_one_line(tmp_path, models):
    with pytest.raises(EvalkitError, match="unknown VQAScore backend 'llava'"):
        create(str(_card(tmp_path, models, backend="llava")))
    with pytest.raises(EvalkitError, match="question_template has no"):
        create(str(_card(tmp_path, models, question_template="Is this right?")))
    with pytest.raises(EvalkitError, match="unknown dtype"):
        create(str(_card(tmp_path, models, dtype="int8")))


def test_a_folder_that_is_not_clip_t5_is_one_line(tmp_path, models):
    metric = create(str(_card(tmp_path, {**models, "model": models["vision"]})))
    with pytest.raises(EvalkitError, match="not a CLIP-T5 config"):
        metric.setup(torch.device("cpu"))


def test_prompt_has_one_image_slot_and_an_end_token_per_chunk(tmp_path, models):
    metric = create(str(_card(tmp_path, models)))
    metric.setup(torch.device("cpu"))
    question = t5_chat('Does this figure show "a red cube"? Please answer yes or no.')
    ids = image_token_ids(question, metric._scorer.tokenizer)
    assert ids.count(-200) == 1 and ids[ids.index(-200) - 1] == 1 and ids[-1] == 1
    assert metric._scorer.answer_ids[-1] == 1  # "Yes" then </s>: both tokens enter the score


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    from evalkit.tiny.qwen_vl import write_tiny_qwen_vl

    return write_tiny_qwen_vl(tmp_path_factory.mktemp("tiny-qwen") / "model", seed=1)


def _qwen_metric(tmp_path, qwen, **params):
    metric = create(str(_card(tmp_path, {"model": qwen}, backend="qwen2.5-vl", **params)))
    metric.setup(torch.device("cpu"))
    return metric


def _items(n):
    from evalkit.metrics.api import ImageItem
    from evalkit.prompts.sets import Prompt

    texts = ["a red cube", "two cats on a table", "the dog", "a green apple and a blue cup"]
    return [ImageItem("coco-10k", Prompt(str(k), texts[k % len(texts)]), 0, f"{k}.png", None, "") for k in range(n)]


def _images(n):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(4)
    return [Image.fromarray(rng.integers(0, 256, (30 + 9 * k, 50 - 5 * k, 3), dtype=np.uint8)) for k in range(n)]


def test_qwen_uses_its_reference_template_and_scores_independently_of_the_batch(tmp_path, qwen):
    metric = _qwen_metric(tmp_path, qwen)
    assert metric.question_template == 'Does this image show "{}"?'  # t2v_metrics' Qwen2VLModel default
    items, images = _items(4), _images(4)
    prepared = [metric.prepare(item, image) for item, image in zip(items, images, strict=True)]
    together = [r[0]["value"] for r in metric.score_batch(items, prepared)]
    alone = [metric.score_batch([item], [p])[0][0]["value"] for item, p in zip(items, prepared, strict=True)]
    assert all(0.0 < v < 1.0 for v in together) and len({round(v, 9) for v in together}) == 4
    assert max(abs(a - b) for a, b in zip(together, alone, strict=True)) <= 1e-6 * max(alone)
    assert metric.models_used()["model"]["backend"] == "qwen2.5-vl" and set(metric.models_used()) == {"model"}


def test_qwen_template_override_changes_the_fingerprint(tmp_path, qwen):
    default = create(str(_card(tmp_path, {"model": qwen}, backend="qwen2.5-vl")))
    asked = create(str(_card(tmp_path, {"model": qwen}, backend="qwen2.5-vl",
                             question_template='Does this figure show "{}"? Please answer yes or no.')))
    assert default.fingerprint() != asked.fingerprint()


def test_qwen_refusals_are_one_line(tmp_path, qwen, models):
    from PIL import Image

    metric = create(str(_card(tmp_path, {"model": models["vision"]}, backend="qwen2.5-vl")))
    with pytest.raises(EvalkitError, match="not Qwen-VL"):
        metric.setup(torch.device("cpu"))
    metric = _qwen_metric(tmp_path, qwen)
    with pytest.raises(EvalkitError, match="aspect ratio over 200"):
        metric.prepare(_items(1)[0], Image.new("RGB", (2010, 10)))
