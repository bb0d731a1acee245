"""CLIP-FlanT5 (Lin et al. 2024), the VQAScore reference model, on transformers' T5 and CLIP.

t2v_metrics' `CLIPT5ForConditionalGeneration` is LLaVA-1.5's recipe on an encoder-decoder: CLIP
ViT-L/14-336 hidden states of layer −2 without the CLS token (576 patch tokens), a `mlp2x_gelu`
projector (Linear, GELU, Linear) into T5's width, spliced into the encoder's input embeddings where
the prompt has its `<image>` token. Rebuilt here under its parameter names (`shared`, `encoder.*`,
`decoder.*`, `lm_head`, `vision_tower.vision_tower.vision_model.*`, `mm_projector.{0,2}.*`), so its
checkpoint loads by name, strictly.

Reproduced quirks of the reference's scoring (`CLIPT5Model.forward`):
- the prompt is tokenised chunk by chunk around `<image>` (`t5_tokenizer_image_token`), and T5's
  tokenizer appends `</s>` to every chunk, so an end-of-sequence token sits before the image too;
- the answer "Yes" is tokenised the same way, [▁Yes, </s>], and the score is
  exp(−mean cross-entropy) over both tokens — the geometric mean of P(Yes) and P(</s> | Yes), not
  P(Yes) alone;
- prompts of a batch are right-padded with the pad id before the image is spliced in (padded
  positions masked);
- images are padded to a square with the processor's mean colour (`expand2square`, floored offsets)
  before CLIP's processor (bicubic shorter side 336, floored centre crop, normalise).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from evalkit.errors import EvalkitError

IMAGE_TOKEN_INDEX = -200  # t2v_metrics.constants
IMAGE_TOKEN = "<image>"
SYSTEM_MSG = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
              "helpful, detailed, and polite answers to the user's questions.")
VISION_PREFIX = "vision_tower.vision_tower."


def t5_chat(question: str) -> str:
    """`format_question(..., 't5_chat')`: what clip-flant5-xxl/xl were tuned on."""
    return SYSTEM_MSG + " USER: " + IMAGE_TOKEN + "\n" + question + " ASSISTANT: "


def image_token_ids(prompt: str, tokenizer: Any) -> list[int]:
    """`t5_tokenizer_image_token`: each chunk tokenised on its own (each gets its </s>), joined by the image slot."""
    ids: list[int] = []
    for i, chunk in enumerate(prompt.split(IMAGE_TOKEN)):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(tokenizer(chunk).input_ids)
    return ids


def expand2square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), background)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


@dataclass(frozen=True)
class VisionSelect:
    layer: int  # mm_vision_select_layer (−2)
    feature: str  # mm_vision_select_feature ("patch": drop CLS)


class VisionTower(nn.Module):
    """`CLIPVisionTower`: the module path `vision_tower.vision_tower` its checkpoint names."""

    def __init__(self, config: Any, select: VisionSelect) -> None:
        from transformers import CLIPVisionModel

        super().__init__()
        self.vision_tower = CLIPVisionModel(config)
        self.select = select

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.vision_tower(pixels, output_hidden_states=True).hidden_states[self.select.layer]
        return hidden[:, 1:] if self.select.feature == "patch" else hidden


def projector(kind: str, vision_width: int, width: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(vision_width, width)
    if kind.startswith("mlp") and kind.endswith("x_gelu"):
        modules: list[nn.Module] = [nn.Linear(vision_width, width)]
        for _ in range(1, int(kind[3:-6])):
            modules += [nn.GELU(), nn.Linear(width, width)]
        return nn.Sequential(*modules)
    raise EvalkitError(f"unknown mm_projector_type {kind!r}", "CLIP-FlanT5 checkpoints use mlp2x_gelu")


class ClipT5(nn.Module):
    def __init__(self, t5_config: Any, vision_config: Any, tied_head: bool) -> None:
        from transformers import T5ForConditionalGeneration

        super().__init__()
        self.t5 = T5ForConditionalGeneration(t5_config)
        if not tied_head:  # FlanT5 (T5 v1.1) has its own lm_head; transformers 5 ties it at construction
            self.t5.lm_head.weight = nn.Parameter(self.t5.lm_head.weight.detach().clone())
        select = VisionSelect(int(getattr(t5_config, "mm_vision_select_layer", -2)),
                              str(getattr(t5_config, "mm_vision_select_feature", "patch")))
        self.vision_tower = VisionTower(vision_config, select)
        self.mm_projector = projector(str(getattr(t5_config, "mm_projector_type", "mlp2x_gelu")),
                                      int(vision_config.hidden_size), int(t5_config.d_model))

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.mm_projector(self.vision_tower(pixels))

    def answer_likelihood(self, pixels: torch.Tensor, prompts: Sequence[Sequence[int]], answer: Sequence[int],
                          pad_id: int) -> torch.Tensor:
        """exp(−mean CE of `answer`) per row, as the reference computes its score (one image per prompt)."""
        features = self.encode_images(pixels)
        embed = self.t5.get_input_embeddings()
        width = max(len(p) for p in prompts)
        rows, masks = [], []
        for prompt, image in zip(prompts, features, strict=True):
            ids = torch.tensor([*prompt, *[pad_id] * (width - len(prompt))], device=features.device)
            slots = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
            if len(slots) != 1:
                raise ValueError("each VQAScore prompt holds exactly one <image>")
            at = slots[0]
            rows.append(torch.cat([embed(ids[:at]), image.to(embed.weight.dtype), embed(ids[at + 1:])]))
            real = torch.tensor([True] * len(prompt) + [False] * (width - len(prompt)), device=features.device)
            masks.append(torch.cat([real[:at], torch.ones(image.shape[0], dtype=torch.bool, device=real.device),
                                    real[at + 1:]]))
        labels = torch.tensor([list(answer)] * len(prompts), device=features.device)
        out = self.t5(inputs_embeds=torch.stack(rows), attention_mask=torch.stack(masks).long(), labels=labels,
                      decoder_attention_mask=torch.ones_like(labels))
        loss = nn.functional.cross_entropy(out.logits.float().transpose(1, 2), labels, reduction="none").mean(dim=1)
        return (-loss).exp()


def read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EvalkitError(f"{folder} has no readable config.json", "point the card at a CLIP-FlanT5 folder") from e
    if "mm_vision_tower" not in config:
        raise EvalkitError(f"{folder}/config.json is not a CLIP-T5 config (no mm_vision_tower)",
                           "point the card's model at zhiqiulin/clip-flant5-xxl (or -xl)")
    return dict(config)


def module_name(key: str, net: ClipT5) -> str:
    """A checkpoint name (the reference's, saved by transformers 4: `...vision_tower.vision_model.*`) as
    this module names it (transformers 5's CLIPVisionModel has no `vision_model.` level)."""
    if key.startswith("mm_projector."):
        return key
    if key.startswith(VISION_PREFIX):
        rest = key[len(VISION_PREFIX):]
        flat = not hasattr(net.vision_tower.vision_tower, "vision_model")
        return VISION_PREFIX + (rest.removeprefix("vision_model.") if flat else rest)
    return "t5." + key


def checkpoint_name(key: str) -> str:
    """The inverse of `module_name`: what the reference's checkpoint calls this module's tensor."""
    if key.startswith("t5."):
        return key[len("t5."):]
    if key.startswith(VISION_PREFIX) and not key.startswith(VISION_PREFIX + "vision_model."):
        return VISION_PREFIX + "vision_model." + key[len(VISION_PREFIX):]
    return key


def t5_config_of(config: dict[str, Any]) -> Any:
    """transformers' T5Config of a CLIP-T5 config.json (its mm_* fields ride along as attributes)."""
    from transformers import T5Config

    return T5Config(**{k: v for k, v in config.items() if k not in ("model_type", "architectures")})


def load_clip_t5(model: Path, vision: Path) -> ClipT5:
    """The checkpoint in `model` (safetensors, the reference's names); vision weights from it when it has
    them (a saved CLIPT5ForConditionalGeneration holds its whole tower), else from the CLIP folder `vision`,
    the tower the reference builds before loading the checkpoint over it."""
    from safetensors import safe_open
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = read_config(model)
    tied = bool(config.get("tie_word_embeddings", True))
    vision_config = CLIPVisionConfig.from_pretrained(str(vision))
    net = ClipT5(t5_config_of(config), vision_config, tied)
    state: dict[str, torch.Tensor] = {}
    files = sorted(model.glob("*.safetensors"))
    if not files:
        raise EvalkitError(f"{model} has no .safetensors weights",
                           "convert the checkpoint once (load it in the reference and save_pretrained with "
                           "safe_serialization=True)")
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                state[key] = f.get_tensor(key)
    state.pop("embed_tokens.weight", None)  # the reference's alias of encoder.embed_tokens (= shared)
    ours = {module_name(key, net): tensor for key, tensor in state.items()}
    if not any(k.startswith(VISION_PREFIX) for k in ours):
        tower = CLIPVisionModel.from_pretrained(str(vision), use_safetensors=True)
        ours.update({VISION_PREFIX + k: v for k, v in tower.state_dict().items()})
    missing, unexpected = net.load_state_dict(ours, strict=False)
    aliases = {"t5.encoder.embed_tokens.weight", "t5.decoder.embed_tokens.weight"} | ({"t5.lm_head.weight"} if tied
                                                                                       else set())
    missing = [k for k in missing if k not in aliases]
    if missing or unexpected:
        raise EvalkitError(f"{model} does not fit CLIP-T5 (missing {missing[:3]}, unexpected {unexpected[:3]})",
                           "point the card at a CLIP-FlanT5 checkpoint and its vision tower")
    return net.eval()
