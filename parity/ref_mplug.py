"""modelscope's own mPLUG VQA answers for tiny random checkpoints; runs INSIDE the reference venv.

    .venv-ref/bin/python parity/ref_mplug.py SPEC.json OUT.json

SPEC.json (written by tests/test_parity_mplug.py):
    {"models": [{"folder": a folder holding vocab.txt, config_bert.json, config.yaml, configuration.json,
                 "seed": int, "std": float | null, "sep_bias": float}],
     "cases": [{"image": png path, "questions": [str]}]}
OUT.json: {"models": [{"cases": [{"answers": [pipeline text per question],
                                  "ids": [[answer token ids from [CLS]]], "scores": [beam score],
                                  "question_ids": [[...]], "logits": [[[teacher-forced decoder logits]]]}]}],
           "versions": {...}}

Each model is modelscope 1.40.2's `MPlugForVisualQuestionAnswering` built from the folder's config with
random weights (torch seed; `std` redraws every matrix from N(0, std) so answers depend on the input;
`sep_bias` is added to [SEP]'s output bias so beams end early), saved as the folder's pytorch_model.bin,
then loaded back and run by `pipeline('visual-question-answering', model=folder)` on each image's PATH,
as TIFA calls it. The VQA pipeline module imports OFA's classes for isinstance checks, and those import
audio/Chinese-text packages (fairseq, librosa, ...) that mPLUG never calls; where they are not installed
they are replaced by empty stub modules. The logits are those of the pipeline's own model, teacher-forced
on its answer through its own modules (visual encoder, visn_fc, text and fusion encoders, text decoder).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch

OPTIONAL = {"fairseq", "torchaudio", "librosa", "soundfile", "rapidfuzz", "zhconv", "unicodedata2"}


class _Stub(types.ModuleType):
    """An importable empty package whose every attribute is an inert class."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__path__: list[str] = []

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *a, **k: None})


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Stub(spec.name)

    def exec_module(self, module) -> None:
        pass


def build(model_spec: dict) -> None:
    from modelscope.models.multi_modal.mplug import MPlugConfig
    from modelscope.models.multi_modal.mplug.modeling_mplug import MPlugForVisualQuestionAnswering

    folder = model_spec["folder"]
    config = MPlugConfig.from_yaml_file(f"{folder}/config.yaml")
    config.model_dir = folder
    torch.manual_seed(model_spec["seed"])
    model = MPlugForVisualQuestionAnswering(config).eval()
    with torch.no_grad():
        if model_spec.get("std"):
            for _, p in model.named_parameters():
                if p.dim() >= 2:
                    p.normal_(0, model_spec["std"])
        model.text_decoder.cls.predictions.bias[102] += model_spec.get("sep_bias", 0.0)
    torch.save(model.state_dict(), f"{folder}/pytorch_model.bin")


def teacher_forced(model, image: torch.Tensor, question, answer: torch.Tensor) -> list:
    """The pipeline model's decoder logits on its own answer, through its own modules (MM:2136-2153)."""
    with torch.no_grad():
        embeds = model.visual_encoder.visual(image, skip_last_layer=True)
        if model.large:
            embeds = model.dropout(model.visn_layer_norm(model.visn_fc(embeds)))
        atts = torch.ones(embeds.size()[:-1], dtype=torch.long)
        text = model.text_encoder(question.input_ids, attention_mask=question.attention_mask,
                                  return_dict=True).last_hidden_state
        image_out, question_out = model.fusion_encoder(encoder_embeds=text, attention_mask=question.attention_mask,
                                                       encoder_hidden_states=embeds, encoder_attention_mask=atts,
                                                       return_dict=False)
        states = torch.cat([image_out, question_out], 1)
        mask = torch.cat([atts, question.attention_mask], 1)
        out = model.text_decoder(answer[None], encoder_hidden_states=states, encoder_attention_mask=mask,
                                 return_dict=True, reduction="none")
        return out.logits[0].tolist()


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    missing = {n for n in OPTIONAL if importlib.util.find_spec(n) is None}
    sys.meta_path.insert(0, _StubFinder(missing))
    import modelscope
    from modelscope.pipelines import pipeline

    results = []
    for model_spec in spec["models"]:
        build(model_spec)
        pipe = pipeline("visual-question-answering", model=model_spec["folder"], device="cpu")
        inner = pipe.model.model  # MPlugForAllTasks -> MPlugForVisualQuestionAnswering
        cases = []
        for case in spec["cases"]:
            row: dict[str, list] = {"answers": [], "ids": [], "scores": [], "question_ids": [], "logits": []}
            for question in case["questions"]:
                row["answers"].append(pipe({"image": case["image"], "question": question})["text"])
                inputs = pipe.preprocessor({"image": case["image"], "question": question})
                with torch.no_grad():
                    ids, scores = inner(inputs["image"], inputs["question"], train=False)
                row["ids"].append(ids[0][0].tolist())
                row["scores"].append(float(scores[0][0]))
                row["question_ids"].append(inputs["question"].input_ids[0].tolist())
                row["logits"].append(teacher_forced(inner, inputs["image"], inputs["question"], ids[0][0]))
            cases.append(row)
        results.append({"cases": cases})
    versions = {"modelscope": modelscope.__version__, "torch": torch.__version__}
    Path(out_path).write_text(json.dumps({"models": results, "versions": versions}), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
