"""t2v_metrics 3.0's VQAScore with CLIP-FlanT5 on a tiny random checkpoint; runs INSIDE the reference venv.

    .venv-ref/bin/python parity/ref_vqascore.py SPEC.json OUT.json

Two steps (tests/test_parity_vqascore.py):
- {"step": "tokenizer", "folder": path, "corpus": [str]}: a T5 tokenizer as google/flan-t5-xxl ships one —
  a sentencepiece unigram `spiece.model` (pad 0, </s> 1, <unk> 2, no <s>) trained here on the corpus, saved
  by the slow T5Tokenizer (what the reference loads, `use_fast=False`), plus the `tokenizer.json`
  transformers converts from it (what evalkit loads). OUT: {"vocab_size"}.
- {"step": "score", "model", "tokenizer", "images": [path], "texts": [str]}: t2v_metrics' own
  `CLIPT5Model` with a 'tiny' entry added to its CLIP_T5_MODELS table (the tokenizer and model paths,
  conversation 't5_chat', image_aspect_ratio 'pad', as 'clip-flant5-xxl'); its load_pretrained_model builds
  CLIPT5ForConditionalGeneration.from_pretrained (the vision tower from the config's mm_vision_tower
  folder) and casts it to bfloat16, which its forward cannot run on CPU (the float32 tower output meets
  the bfloat16 projector outside CUDA autocast) — so the model is cast back to float32 and the checkpoint's
  float32 tensors are loaded over the rounded ones, the one deviation. Then `forward(images, texts)` with
  its default templates, all pairs in one call.
  OUT: {"scores", "input_ids": the first prompt's ids as its t5_tokenizer_image_token builds them,
  "answer_ids", "versions"}.

t2v_metrics' package __init__ requires ffmpeg and imports every model family; its modules are imported
here under stub parent packages (the real directories as their __path__), so only the CLIP-T5 code runs.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from importlib import metadata
from pathlib import Path


def import_t2v(module_name: str):
    """t2v_metrics.models.vqascore_models.<module_name>, its parents stubbed (module doc)."""
    root = Path(importlib.util.find_spec("t2v_metrics").submodule_search_locations[0])
    for name, folder in [("t2v_metrics", root), ("t2v_metrics.models", root / "models"),
                         ("t2v_metrics.models.vqascore_models", root / "models" / "vqascore_models")]:
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(folder)]
            sys.modules[name] = module
    return importlib.import_module(f"t2v_metrics.models.vqascore_models.{module_name}")


def tokenizer_step(spec: dict) -> dict:
    import sentencepiece as spm
    from transformers import T5Tokenizer, T5TokenizerFast

    folder = Path(spec["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(spec["corpus"]) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "spiece"),
                                   vocab_size=int(spec["size"]), model_type="unigram", pad_id=0, eos_id=1,
                                   unk_id=2, bos_id=-1,
                                   character_coverage=1.0, hard_vocab_limit=False)
    corpus.unlink()
    slow = T5Tokenizer(vocab_file=str(folder / "spiece.model"), extra_ids=0, model_max_length=2048)
    slow.save_pretrained(str(folder))
    T5TokenizerFast.from_pretrained(str(folder), from_slow=True).save_pretrained(str(folder))
    return {"vocab_size": len(slow)}


def score_step(spec: dict) -> dict:
    module = import_t2v("clip_t5_model")
    module.CLIP_T5_MODELS["tiny"] = {"tokenizer": {"path": spec["tokenizer"], "model_max_length": 2048},
                                     "model": {"path": spec["model"], "conversation": "t5_chat",
                                               "image_aspect_ratio": "pad"}}
    from t2v_metrics.models.vqascore_models.mm_utils import t5_tokenizer_image_token

    scorer = module.CLIPT5Model(model_name="tiny", device="cpu", cache_dir=spec["cache"])
    try:  # as loaded (bfloat16) on CPU
        scorer.forward(images=spec["images"][:1], texts=spec["texts"][:1])
        as_loaded = "ran"
    except RuntimeError as e:
        as_loaded = str(e).splitlines()[0]
    # back to float32, and the checkpoint's exact float32 values over the bfloat16-rounded ones
    from safetensors.torch import load_file

    scorer.model.float()
    missing, unexpected = scorer.model.load_state_dict(load_file(str(Path(spec["model"]) / "model.safetensors")),
                                                       strict=False)
    aliases = {"embed_tokens.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
    if unexpected or set(missing) - aliases:
        raise SystemExit(f"checkpoint does not fit the reference: missing {missing[:3]}, unexpected {unexpected[:3]}")
    scores = scorer.forward(images=spec["images"], texts=spec["texts"]).tolist()
    question = module.format_question(module.default_question_template.format(spec["texts"][0]), "t5_chat")
    ids = list(t5_tokenizer_image_token(question, scorer.tokenizer))
    answer = list(t5_tokenizer_image_token(module.default_answer_template, scorer.tokenizer))
    return {"scores": scores, "bfloat16_on_cpu": as_loaded, "input_ids": ids, "answer_ids": answer,
            "slow": type(scorer.tokenizer).__name__, "dtype": str(next(scorer.model.parameters()).dtype),
            "versions": {n: metadata.version(n) for n in ("t2v_metrics", "transformers", "torch")}}


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    out = tokenizer_step(spec) if spec["step"] == "tokenizer" else score_step(spec)
    Path(out_path).write_text(json.dumps(out), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
