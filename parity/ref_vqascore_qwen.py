"""t2v_metrics 3.0's VQAScore with Qwen2.5-VL on a tiny random checkpoint; runs INSIDE the reference venv.

    .venv-ref/bin/python parity/ref_vqascore_qwen.py SPEC.json OUT.json

Three steps (tests/test_parity_vqascore_qwen.py):
- {"step": "checkpoint", "source": folder, "folder": out}: the tiny checkpoint evalkit writes (transformers 5
  layout) rewritten in the layout the Qwen/Qwen2.5-VL-*-Instruct hub repositories ship, which is what both sides
  then load: a flat config.json with `rope_scaling: {type: mrope, mrope_section}`, weights under the hub's
  names (`model.layers.*`, `visual.*`, `lm_head.weight`), a flat preprocessor_config.json with
  min_pixels/max_pixels, chat_template.json, the tokenizer saved by this transformers (vocab.json, merges.txt,
  tokenizer.json) and the generation_config.json (repetition_penalty 1.05, sampling settings). OUT: {"files"}.
- {"step": "sizes", "sizes": [[h, w], ...]}: qwen_vl_utils' own fetch_image on a PIL image of each size (the
  resize process_vision_info applies before the processor). OUT: {"sizes": [[h, w], ...]}.
- {"step": "score", "model", "images", "texts"}: t2v_metrics' own Qwen2VLModel with a 'qwen2.5-vl-tiny' entry
  added to its QWEN2_VL_MODELS table (tokenizer and model paths the folder; float32 and eager attention where
  the table's entries say bfloat16 and flash_attention_2, which needs CUDA — the one deviation), then
  `forward(paths, texts)` with its default templates. OUT: {"scores", "without_penalty": the same with the
  checkpoint's repetition_penalty set to 1.0 (what the penalty changes), "input_ids": the first pair's prompt
  ids as its processor builds them, "answer_id", "versions"}.

The t2v_metrics package is imported under stub parents (ref_vqascore.import_t2v), so only the Qwen code runs.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

from ref_vqascore import import_t2v


def checkpoint_step(spec: dict) -> dict:
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2TokenizerFast

    source, folder = Path(spec["source"]), Path(spec["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    text = config.pop("text_config")
    rope = text.pop("rope_parameters")
    vision = {k: v for k, v in config.pop("vision_config").items() if k != "rope_parameters"}
    flat = {k: v for k, v in {**config, **text}.items() if k not in ("dtype", "transformers_version", "layer_types")}
    flat |= {"model_type": "qwen2_5_vl", "rope_theta": rope["rope_theta"], "torch_dtype": "float32",
             "rope_scaling": {"type": "mrope", "mrope_section": rope["mrope_section"]}, "vision_config": vision}
    (folder / "config.json").write_text(json.dumps(flat, indent=2), encoding="utf-8")
    renames = (("model.language_model.", "model."), ("model.visual.", "visual."))
    state = load_file(str(source / "model.safetensors"))
    for old, new in renames:
        state = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in state.items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    processor = json.loads((source / "processor_config.json").read_text(encoding="utf-8"))["image_processor"]
    size = processor.pop("size")
    processor |= {"min_pixels": size["shortest_edge"], "max_pixels": size["longest_edge"],
                  "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2), encoding="utf-8")
    template = (source / "chat_template.jinja").read_text(encoding="utf-8")
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}), encoding="utf-8")
    special = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))["extra_special_tokens"]
    tokenizer = Qwen2TokenizerFast(tokenizer_file=str(source / "tokenizer.json"), eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None, bos_token=None,
                                   additional_special_tokens=special)
    tokenizer.save_pretrained(str(folder))
    generation = json.loads((source / "generation_config.json").read_text(encoding="utf-8"))
    generation.pop("transformers_version", None)
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2), encoding="utf-8")
    return {"files": sorted(p.name for p in folder.iterdir())}


def sizes_step(spec: dict) -> dict:
    from PIL import Image
    from qwen_vl_utils.vision_process import fetch_image

    out = []
    for h, w in spec["sizes"]:
        image = fetch_image({"type": "image", "image": Image.new("RGB", (w, h), (10, 20, 30))})
        out.append([image.height, image.width])
    return {"sizes": out}


def score_step(spec: dict) -> dict:
    import torch

    module = import_t2v("qwen2vl_model")
    module.QWEN2_VL_MODELS["qwen2.5-vl-tiny"] = {
        "tokenizer": {"path": spec["model"]},
        "model": {"path": spec["model"], "torch_dtype": torch.float32, "attn_implementation": "eager"},
        "fps": 8.0}
    scorer = module.Qwen2VLModel(model_name="qwen2.5-vl-tiny", device="cpu")
    scores = scorer.forward(spec["images"], spec["texts"]).tolist()
    penalty = scorer.model.generation_config.repetition_penalty
    scorer.model.generation_config.repetition_penalty = 1.0
    without = scorer.forward(spec["images"], spec["texts"]).tolist()
    from qwen_vl_utils import process_vision_info

    question = 'Does this image show "{}"?'.format(spec["texts"][0])  # forward's default template
    messages = [{"role": "user", "content": [scorer.load_images(spec["images"][:1])[0],
                                             {"type": "text", "text": question}]}]
    text = scorer.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    images, _ = process_vision_info(messages)
    inputs = scorer.processor(text=[text], images=images, padding=True, return_tensors="pt")
    return {"scores": scores, "without_penalty": without, "penalty": penalty,
            "input_ids": inputs["input_ids"][0].tolist(), "answer_id": scorer.processor.tokenizer.encode("Yes")[0],
            "model_class": type(scorer.model).__name__, "dtype": str(scorer.model.dtype),
            "image_processor": type(scorer.processor.image_processor).__name__,
            "versions": {n: metadata.version(n) for n in ("t2v_metrics", "transformers", "torch", "qwen-vl-utils")}}


STEPS = {"checkpoint": checkpoint_step, "sizes": sizes_step, "score": score_step}


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    out = STEPS[spec["step"]](spec)
    Path(out_path).write_text(json.dumps(out), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
