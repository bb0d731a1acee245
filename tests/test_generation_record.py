"""generation.json: one typed model, one validated reader, one writer (evalkit.generation.record, StepDir)."""

from __future__ import annotations

import json

import pytest

from evalkit.errors import EvalkitError
from evalkit.generation.record import GeneratedCheckpoint, GeneratedPromptSet, GenerationRecord
from evalkit.stepdir import StepDir

SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def _record() -> GenerationRecord:
    return GenerationRecord(
        GeneratedCheckpoint("tiny", 100, SHA_A, "StableDiffusionPipeline", {"kind": "training_step"}),
        {"steps": 50, "guidance_scale": 7.5, "fingerprint": SHA_B},
        {"user": GeneratedPromptSet(SHA_C, 3, "user", "/data/prompts.txt")},
        {"platform": "test"},
    )


def test_written_record_reads_back_equal_and_is_sorted_strict_json(tmp_path):
    folder = StepDir(tmp_path / "tiny" / "100")
    folder.path.mkdir(parents=True)
    folder.write_generation(_record())
    assert folder.read_generation() == _record()
    text = folder.generation_json.read_text(encoding="utf-8")
    assert text.endswith("}\n") and json.loads(text)["schema"] == "evalkit.generation/1"
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_a_nan_setting_never_reaches_the_file(tmp_path):
    folder = StepDir(tmp_path)
    record = _record()
    bad = GenerationRecord(record.checkpoint, {**record.protocol, "guidance_scale": float("nan")},
                           record.prompt_sets, record.provenance)
    with pytest.raises(ValueError):
        folder.write_generation(bad)
    assert not folder.generation_json.exists()


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["checkpoint"].pop("fingerprint"), "checkpoint.fingerprint is missing"),
    (lambda d: d["checkpoint"].update(step="100"), "checkpoint.step is not an integer or null"),
    (lambda d: d["prompt_sets"]["user"].update(n=-1), "prompt_sets.user.n is invalid"),
    (lambda d: d["protocol"].update(fingerprint="x"), "protocol.fingerprint is invalid"),
    (lambda d: d.pop("prompt_sets"), "prompt_sets is missing"),
    (lambda d: d.update(schema="evalkit.generation/0"), "schema is 'evalkit.generation/0'"),
])
def test_a_garbled_record_is_one_line_naming_file_and_field(tmp_path, change, message):
    folder = StepDir(tmp_path)
    document = _record().to_json()
    change(document)
    folder.generation_json.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(EvalkitError) as caught:
        folder.read_generation()
    text = str(caught.value)
    assert message in text and str(folder.generation_json) in text and "\n" not in text


def test_older_minimal_record_reads_with_defaults(tmp_path):
    """Optional fields (pipeline class, source, version, provenance) may be absent."""
    folder = StepDir(tmp_path)
    folder.generation_json.write_text(json.dumps({
        "schema": "evalkit.generation/1", "checkpoint": {"name": "m", "step": None, "fingerprint": SHA_A},
        "protocol": {"fingerprint": SHA_B}, "prompt_sets": {"coco-10k": {"fingerprint": SHA_C, "n": 4}}}))
    record = folder.read_generation()
    assert record.checkpoint == GeneratedCheckpoint("m", None, SHA_A)
    assert record.prompt_sets["coco-10k"] == GeneratedPromptSet(SHA_C, 4)
    assert record.protocol_fingerprint == SHA_B and record.provenance == {}


def test_a_user_set_without_a_recorded_file_cannot_be_reloaded(tmp_path):
    record = _record()
    unrecorded = GenerationRecord(record.checkpoint, record.protocol, {"user": GeneratedPromptSet(SHA_C, 3)})
    with pytest.raises(EvalkitError, match="neither built in nor recorded"):
        unrecorded.load_prompt_set("user")
    assert len(record.load_prompt_set("tifa-v1.0-sample")) > 0
