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
    ids = image_token_ids(t5_chat('Does this figure show "a red cube"? Please answer yes or no.'), metric._tokenizer)
    assert ids.count(-200) == 1 and ids[ids.index(-200) - 1] == 1 and ids[-1] == 1
    assert metric._answer_ids[-1] == 1  # "Yes" then </s>: both tokens enter the score
