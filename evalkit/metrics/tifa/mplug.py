"""mPLUG (Li et al. 2022), the VQA model behind TIFA v1.0's published numbers, on plain torch.

The reference is modelscope's `MPlugForVisualQuestionAnswering` (modelscope 1.40.2,
models/multi_modal/mplug/modeling_mplug.py and predictor.py), which TIFA runs through
`pipeline('visual-question-answering', 'damo/mplug_visual-question-answering_coco_large_en')`.
modelscope cannot be a run-time dependency (it pins and patches far more than it needs), so its
inference path is rebuilt here from its parts, under the same parameter names, and the parity
tests check answers and logits against modelscope's own code on identical random weights:

* image tower: OpenAI-CLIP's VisionTransformer (pre-LN, QuickGELU, LayerNorm eps 1e-5, q|k|v rows
  of one `in_proj`), every token after `ln_post` and no `proj`; then `visn_fc` and `visn_layer_norm`
  (eps 1e-12) when the BERT width differs from the vision width ("large");
* question: a 6-layer BERT text encoder, then the fusion layers. The fusion encoder of the checkpoint
  holds `num_hidden_layers` layers but runs only its last `fusion_layers` (the converter keeps those).
  A fusion layer is self-attention, cross-attention to the image, feed-forward; every
  `stride_layer`-th (never the first) instead attends over image and text together and adds its
  image part back onto the image states;
* answer: a 12-layer BERT decoder with cross-attention over [image states; fused question states],
  its LM head tied to its word embeddings, and modelscope's own beam search (`beam_search`).

Attention masks are the reference's: -10000 on masked self-attention keys, float32's minimum on
masked cross-attention keys; scores are QK^T / sqrt(d), divided after the product.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

START_TOKEN = 101  # [CLS]: TextGenerator starts every answer with it (hard-coded in the reference)
END_TOKEN = 102  # [SEP]
LENGTH_ALPHA = 0.6  # TextGenerator's GNMT length-penalty exponent, hard-coded
SELF_MASKED = -10000.0  # the reference's extended self-attention mask value


@dataclass(frozen=True)
class MPlugConfig:
    """The numbers of one checkpoint (the converter writes them from modelscope's config files)."""

    image_res: int
    vision_width: int
    vision_layers: int
    vision_patch: int
    hidden_size: int
    heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    text_layers: int
    fusion_layers: int
    stride_layer: int
    decoder_layers: int
    layer_norm_eps: float = 1e-12
    beam_size: int = 5
    min_length: int = 1
    max_length: int = 10
    question_tokens: int = 25  # MPlugPreprocessor's tokenizer_max_length

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> MPlugConfig:
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, width // 64)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (L, N, E), as the reference
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class VisionBlocks(nn.Module):
    def __init__(self, width: int, layers: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width) for _ in range(layers)])


class VisionTower(nn.Module):
    def __init__(self, config: MPlugConfig) -> None:
        super().__init__()
        width, patch = config.vision_width, config.vision_patch
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros((config.image_res // patch) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = VisionBlocks(width, config.vision_layers)
        self.ln_post = nn.LayerNorm(width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.conv1(pixels)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype,
                                                             device=x.device)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding[:x.shape[1] + 1].to(x.dtype)
        x = self.ln_pre(x)
        x = self.transformer.resblocks(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x)  # every token; the reference skips `proj` (skip_last_layer=True)


class BertEmbeddings(nn.Module):
    def __init__(self, config: MPlugConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_positions, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.token_type_embeddings(torch.zeros_like(ids))
        return self.LayerNorm(x + self.position_embeddings(positions)[None])


class BertSelfAttention(nn.Module):
    def __init__(self, config: MPlugConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.heads = config.heads
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, -1).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        source = x if memory is None else memory
        q, k, v = self._split(self.query(x)), self._split(self.key(source)), self._split(self.value(source))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + mask
        out = torch.matmul(scores.softmax(dim=-1), v).permute(0, 2, 1, 3)
        return out.reshape(out.shape[0], out.shape[1], -1)


class BertAttention(nn.Module):
    def __init__(self, config: MPlugConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertResidual(config, config.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        return self.output(self.self(x, mask, memory), x)


class BertResidual(nn.Module):
    """`dense` then LayerNorm over the sum with the block's input (BertSelfOutput and BertOutput)."""

    def __init__(self, config: MPlugConfig, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertIntermediate(nn.Module):
    def __init__(self, config: MPlugConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # BERT's "gelu": the exact erf form


class BertLayer(nn.Module):
    def __init__(self, config: MPlugConfig, cross: bool) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        if cross:
            self.crossattention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidual(config, config.intermediate_size)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.intermediate(x), x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, memory: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attention(x, mask)
        if memory is not None and memory_mask is not None:
            x = self.crossattention(x, memory_mask, memory)
        return self.feed_forward(x)


class BertLayers(nn.Module):
    def __init__(self, config: MPlugConfig, layers: int, cross: bool) -> None:
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(config, cross) for _ in range(layers)])

    def __iter__(self) -> Iterator[BertLayer]:
        return iter(self.layer)  # type: ignore[arg-type]


class BertStack(nn.Module):
    """`embeddings` and `encoder.layer.N`, under the reference's names."""

    def __init__(self, config: MPlugConfig, layers: int, cross: bool) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertLayers(config, layers, cross)


class HeadTransform(nn.Module):
    def __init__(self, config: MPlugConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class Predictions(nn.Module):
    def __init__(self, config: MPlugConfig) -> None:
        super().__init__()
        self.transform = HeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))


class LMHead(nn.Module):
    """`cls.predictions`; its output matrix is the decoder's word embeddings (tied, as in the reference)."""

    def __init__(self, config: MPlugConfig) -> None:
        super().__init__()
        self.predictions = Predictions(config)

    def forward(self, x: torch.Tensor, embeddings: nn.Embedding) -> torch.Tensor:
        t = self.predictions.transform
        x = t.LayerNorm(F.gelu(t.dense(x)))
        return F.linear(x, embeddings.weight, self.predictions.bias)


class FusionStack(nn.Module):
    """The fusion layers the reference runs, as `encoder.layer.N` (no embeddings: it takes the text encoder's)."""

    def __init__(self, config: MPlugConfig) -> None:
        super().__init__()
        self.encoder = BertLayers(config, config.fusion_layers, cross=True)


class TextDecoder(nn.Module):
    def __init__(self, config: MPlugConfig) -> None:
        super().__init__()
        self.bert = BertStack(config, config.decoder_layers, cross=True)
        self.cls = LMHead(config)


def self_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) or (B, Lq, L) of 0/1 -> the additive mask the reference adds: (1 - m) * -10000."""
    extended = mask[:, None, None, :] if mask.dim() == 2 else mask[:, None, :, :]
    return (1.0 - extended.to(dtype)) * SELF_MASKED


def cross_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """transformers' invert_attention_mask: (1 - m) * finfo.min."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class MPlugVQA(nn.Module):
    """The inference path of modelscope's MPlugForVisualQuestionAnswering."""

    def __init__(self, config: MPlugConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = VisionTower(config)
        self.large = config.hidden_size != config.vision_width
        if self.large:
            self.visn_fc = nn.Linear(config.vision_width, config.hidden_size)
            self.visn_layer_norm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.text_encoder = BertStack(config, config.text_layers, cross=False)
        self.fusion = FusionStack(config)
        self.text_decoder = TextDecoder(config)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.visual(pixels)
        return self.visn_layer_norm(self.visn_fc(x)) if self.large else x

    def fuse(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder memory and its mask for question rows (`images`: each row's image states)."""
        dtype = images.dtype
        text = self.text_encoder.embeddings(ids)
        text_mask = self_mask(mask, dtype)
        for layer in self.text_encoder.encoder:
            text = layer(text, text_mask)
        image_ones = torch.ones(images.shape[:2], dtype=mask.dtype, device=mask.device)
        image_cross = cross_mask(image_ones, dtype)
        images = images.clone()  # the reference adds onto its image states in place
        for number, layer in enumerate(self.fusion.encoder):
            if number == 0 or number % self.config.stride_layer != 0:
                text = layer(text, text_mask, images, image_cross)
            else:  # attend over [image; text] together, no cross-attention
                joint = torch.cat([images, text], dim=1)
                joint = layer.feed_forward(layer.attention(joint, torch.cat([image_cross, text_mask], dim=3)))
                image_part, text = torch.split(joint, [images.shape[1], text.shape[1]], dim=1)
                images = images + image_part
        return torch.cat([images, text], dim=1), torch.cat([image_ones, mask], dim=1)

    def decoder_logits(self, ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, V) logits of answer prefixes `ids` (causal, no padding), as BertLMHeadModel gives them."""
        bert = self.text_decoder.bert
        x = bert.embeddings(ids)
        length = ids.shape[1]
        causal = torch.tril(torch.ones(length, length, device=ids.device))[None].expand(ids.shape[0], -1, -1)
        mask, memory_cross = self_mask(causal, x.dtype), cross_mask(memory_mask, x.dtype)
        for layer in bert.encoder:
            x = layer(x, mask, memory, memory_cross)
        return self.text_decoder.cls(x, bert.embeddings.word_embeddings)


@dataclass(frozen=True)
class Beam:
    """One answer: token ids from the [CLS] start (with [SEP] where it ended) and its normalised score."""

    ids: list[int]
    score: float


def beam_search(step_logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], rows: int, device: torch.device,
                beam: int = 5, max_length: int = 10, min_length: int = 1) -> list[Beam]:
    """modelscope's TextGenerator._fast_translate_batch, row by row and batched.

    `step_logits(alive_rows, prefixes)` gives the last position's logits of each prefix, whose row
    (into the `rows` questions) is `alive_rows[i]`. The reference's quirks, kept: scores are
    log(softmax) summed and divided by ((5 + t) / 6) ** 0.6 (cumulative log-probabilities carried as
    score * penalty); [SEP] is blocked (-1e20) for the first `min_length` steps; a row ends only when
    its top beam emits [SEP] (or at `max_length`), and then all its current beams join the
    hypotheses; a lower beam that emits [SEP] is recorded but stays alive and grows past it; the
    answer is the best recorded score, earlier-recorded first among ties (Python's stable sort).
    """
    alive_rows = torch.arange(rows, device=device)
    prefixes = torch.full((rows * beam, 1), START_TOKEN, dtype=torch.long, device=device)
    cumulative = torch.tensor([0.0] + [float("-inf")] * (beam - 1), device=device).repeat(rows)
    hypotheses: list[list[tuple[float, list[int]]]] = [[] for _ in range(rows)]
    results: list[Beam | None] = [None] * rows
    for step in range(max_length):
        logits = step_logits(alive_rows.repeat_interleave(beam), prefixes).float()
        vocab = logits.shape[-1]
        log_probs = torch.log(torch.softmax(logits, dim=-1))
        if step < min_length:
            log_probs[:, END_TOKEN] = -1e20
        penalty = ((5.0 + (step + 1)) / 6.0) ** LENGTH_ALPHA
        log_probs = log_probs + cumulative.unsqueeze(1)
        scores, ids = (log_probs / penalty).reshape(-1, beam * vocab).topk(beam, dim=-1)
        cumulative = (scores * penalty).reshape(-1)
        origin = torch.div(ids, vocab, rounding_mode="floor") + beam * torch.arange(len(alive_rows),
                                                                                      device=device)[:, None]
        prefixes = torch.cat([prefixes.index_select(0, origin.reshape(-1)), ids.fmod(vocab).reshape(-1, 1)], dim=-1)
        finished = ids.fmod(vocab).eq(END_TOKEN)
        if step + 1 == max_length:
            finished.fill_(True)
        ended = finished[:, 0].clone()
        finished[ended] = True
        keep = []
        for i, row in enumerate(alive_rows.tolist()):
            for j in finished[i].nonzero().view(-1).tolist():
                hypotheses[row].append((float(scores[i, j]), prefixes[i * beam + j].tolist()))
            if ended[i]:
                best = sorted(hypotheses[row], key=lambda h: h[0], reverse=True)[0]
                results[row] = Beam(best[1], best[0])
            else:
                keep.append(i)
        if not keep:
            break
        kept = torch.tensor(keep, device=device)
        alive_rows = alive_rows.index_select(0, kept)
        beams = (kept[:, None] * beam + torch.arange(beam, device=device)).reshape(-1)
        prefixes, cumulative = prefixes.index_select(0, beams), cumulative.index_select(0, beams)
    return [r for r in results if r is not None]
