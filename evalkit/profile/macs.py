"""Multiply-accumulate counts of one forward pass, with attention attributed by module.

Convention (the one every evalkit number uses; docs/profile.md):
* one MAC per multiply-add of a convolution, a linear layer (matrix product with a weight)
  or an attention matmul (QK^T and attention·V: B·H·L·L'·d MACs each);
* biases, normalisations, activations, softmax, residual adds, up-sampling and every other
  elementwise op are not counted;
* FLOPs = 2 × MACs;
* "attention" is everything run inside an attention module (diffusers `Attention`, and
  modules named *Attention such as transformers' CLIPAttention/T5Attention): the q/k/v/out
  projections (and SD3's added-context projections) plus the score and value matmuls.

Counting runs the module's real forward under torch's `FlopCounterMode`, which sees each
aten matmul/convolution with its shapes, so it works on meta tensors (no weights, no memory)
and follows whatever code path the installed diffusers takes. FlopCounterMode reports FLOPs
(2 per MAC); they are halved here. On the meta device scaled_dot_product_attention
decomposes into two bmm calls; on a real CPU it dispatches to a fused kernel torch does not
count, so a formula for it is registered (`_EXTRA_FORMULAS`) and both devices agree.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from evalkit.errors import EvalkitError

aten = torch.ops.aten

CONV_OPS = frozenset({"aten.convolution", "aten._convolution", "aten.cudnn_convolution",
                      "aten.convolution_overrideable", "aten._slow_conv2d_forward"})
LINEAR_OPS = frozenset({"aten.mm", "aten.addmm", "aten._addmm_activation", "aten._scaled_mm"})
# Everything else that counts (bmm, baddbmm, SDPA kernels, flex attention) is a batched matmul.


@dataclass(frozen=True)
class MacCount:
    """MACs of one forward pass, split by operation kind and by attention/not."""

    conv: int = 0
    linear: int = 0  # weight matmuls: linear layers, 1x1 projections done as mm, attention projections
    matmul: int = 0  # activation×activation batched matmuls: attention scores and values
    attention: int = 0  # inside attention modules: projections + score/value matmuls
    attention_matmul: int = 0  # the QK^T and attention·V part of `attention`

    @property
    def total(self) -> int:
        return self.conv + self.linear + self.matmul

    @property
    def flops(self) -> int:
        return 2 * self.total

    @property
    def attention_share(self) -> float:
        return self.attention / self.total if self.total else 0.0

    @property
    def conv_linear(self) -> int:
        """Total without the attention matmuls: what conv/linear-only counters report (the
        scaling study's Table 1 uses this convention; see docs/profile.md)."""
        return self.total - self.attention_matmul

    def __add__(self, other: MacCount) -> MacCount:
        return MacCount(**{k: getattr(self, k) + getattr(other, k) for k in asdict(self)})

    def times(self, factor: int) -> MacCount:
        return MacCount(**{k: v * factor for k, v in asdict(self).items()})

    def as_record(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total, "flops": self.flops, "conv_linear": self.conv_linear,
                "attention_share": round(self.attention_share, 6)}


def _sdpa_formula(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None,
                  **kwargs: Any) -> int:
    """FLOPs of QK^T plus attention·V: 2·(B·H·L·S·d + B·H·L·S·d_v)."""
    batch_heads = math.prod(query_shape[:-2])
    length, depth = query_shape[-2], query_shape[-1]
    source, value_depth = key_shape[-2], value_shape[-1]
    return 2 * batch_heads * length * source * (depth + value_depth)


def _addmm_activation_formula(self_shape: Any, a_shape: Any, b_shape: Any, *args: Any, out_shape: Any = None,
                              **kwargs: Any) -> int:
    """addmm fused with gelu/relu (a CPU fast path): the matmul's FLOPs, 2·m·k·n."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def _extra_formulas() -> dict[Any, Callable[..., int]]:
    extra: dict[Any, Callable[..., int]] = {aten._addmm_activation: _addmm_activation_formula}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable"):
        op = getattr(aten, name, None)
        if op is not None:
            extra[op] = _sdpa_formula
    return extra


_EXTRA_FORMULAS = _extra_formulas()


def is_attention_module(module: torch.nn.Module) -> bool:
    """diffusers' Attention (and its new-style mixin) and transformers' *Attention modules;
    not whole models, which diffusers marks with an AttentionMixin."""
    if isinstance(module, _diffusers_attention_types()):
        return True
    from diffusers import ModelMixin
    from transformers import PreTrainedModel

    return type(module).__name__.endswith("Attention") and not isinstance(module, (ModelMixin, PreTrainedModel))


def _diffusers_attention_types() -> tuple[type, ...]:
    """`Attention`, plus the newer `AttentionModuleMixin` where this diffusers has it."""
    from diffusers.models.attention_processor import Attention

    try:
        from diffusers.models.attention import AttentionModuleMixin
    except ImportError:  # diffusers before the attention refactor
        return (Attention,)
    return (Attention, AttentionModuleMixin)


class MacCounter:
    """Counts MACs of everything run inside the block; MACs run inside an attention module
    of `roots` (outermost one only) are attributed to attention."""

    def __init__(self, roots: Iterable[torch.nn.Module] = ()) -> None:
        self._roots = list(roots)
        self._mode: FlopCounterMode | None = None
        self._handles: list[Any] = []
        self._depth = 0
        self._snapshot: dict[Any, int] = {}
        self._attention: Counter[str] = Counter()

    def __enter__(self) -> MacCounter:
        self._mode = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
        for root in self._roots:
            for module in root.modules():
                if is_attention_module(module):
                    self._handles.append(module.register_forward_pre_hook(self._enter_attention))
                    self._handles.append(module.register_forward_hook(self._leave_attention, always_call=True))
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._mode is not None
        self._mode.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _global(self) -> dict[Any, int]:
        assert self._mode is not None
        return dict(self._mode.flop_counts["Global"])

    def _enter_attention(self, module: torch.nn.Module, args: Any) -> None:
        if self._depth == 0:
            self._snapshot = self._global()
        self._depth += 1

    def _leave_attention(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            for op, flops in self._global().items():
                self._attention[str(op)] += flops - self._snapshot.get(op, 0)

    def result(self) -> MacCount:
        assert self._mode is not None
        by_kind: Counter[str] = Counter()
        for op, flops in self._global().items():
            by_kind[_kind(str(op))] += flops
        attention_by_kind: Counter[str] = Counter()
        for op, flops in self._attention.items():
            attention_by_kind[_kind(op)] += flops
        return MacCount(conv=by_kind["conv"] // 2, linear=by_kind["linear"] // 2, matmul=by_kind["matmul"] // 2,
                        attention=sum(attention_by_kind.values()) // 2,
                        attention_matmul=attention_by_kind["matmul"] // 2)


def _kind(op: str) -> str:
    if op in CONV_OPS:
        return "conv"
    if op in LINEAR_OPS:
        return "linear"
    return "matmul"


def count_macs(module: torch.nn.Module, run: Callable[[], Any]) -> MacCount:
    """MACs of `run()` (a forward of `module`), attention attributed within `module`."""
    with torch.no_grad(), MacCounter([module]) as counter:
        run()
    return counter.result()


# -- forwards with correctly shaped dummy inputs, per family -----------------------------------------


def _like(module: torch.nn.Module) -> dict[str, Any]:
    parameter = next(module.parameters())
    return {"device": parameter.device, "dtype": parameter.dtype}


def denoiser_inputs(module: torch.nn.Module, family: str, batch: int, latent_side: int, context_len: int
                    ) -> dict[str, Any]:
    """Keyword arguments for one denoiser forward at `latent_side` (square latents)."""
    from diffusers.models import ModelMixin

    like = _like(module)
    name = type(module).__name__
    if not isinstance(module, ModelMixin):  # every supported denoiser is a diffusers model, with a config
        raise _unsupported_denoiser(name, family)
    config = module.config
    sample = torch.zeros(batch, config.in_channels, latent_side, latent_side, **like)
    timestep = torch.full((batch,), 999, device=like["device"], dtype=torch.long)
    if name == "UNet2DConditionModel":
        return _unet_inputs(config, sample, timestep, context_len, like)
    if name == "PixArtTransformer2DModel":
        use_extra = bool(getattr(module, "use_additional_conditions", False))
        extra = ({"resolution": torch.zeros(batch, 2, **like), "aspect_ratio": torch.zeros(batch, 1, **like)}
                 if use_extra else {"resolution": None, "aspect_ratio": None})
        return {"hidden_states": sample, "timestep": timestep, "added_cond_kwargs": extra,
                "encoder_hidden_states": torch.zeros(batch, context_len, config.caption_channels, **like)}
    if name == "SD3Transformer2DModel":
        return {"hidden_states": sample, "timestep": timestep,
                "encoder_hidden_states": torch.zeros(batch, context_len, config.joint_attention_dim, **like),
                "pooled_projections": torch.zeros(batch, config.pooled_projection_dim, **like)}
    raise _unsupported_denoiser(name, family)


def _unsupported_denoiser(name: str, family: str) -> EvalkitError:
    return EvalkitError(f"evalkit cannot build inputs for a {name} denoiser",
                        f"family {family!r}: supported are UNet2DConditionModel, PixArtTransformer2DModel, "
                        "SD3Transformer2DModel")


def _unet_inputs(config: Any, sample: torch.Tensor, timestep: torch.Tensor, context_len: int,
                 like: dict[str, Any]) -> dict[str, Any]:
    batch = sample.shape[0]
    unsupported = [k for k in ("class_embed_type", "num_class_embeds") if getattr(config, k, None)]
    hid_type = getattr(config, "encoder_hid_dim_type", None)
    if unsupported or hid_type not in (None, "text_proj"):
        what = ", ".join(unsupported) or f"encoder_hid_dim_type={hid_type}"
        raise EvalkitError(f"this UNet needs conditioning evalkit does not profile ({what})",
                           "profile text-to-image UNets (SD 1.x/2.x/XL-style)")
    width = config.encoder_hid_dim if hid_type == "text_proj" else config.cross_attention_dim
    if isinstance(width, (list, tuple)):
        width = width[0]
    kwargs: dict[str, Any] = {"sample": sample, "timestep": timestep,
                              "encoder_hidden_states": torch.zeros(batch, context_len, int(width), **like)}
    addition = getattr(config, "addition_embed_type", None)
    if addition == "text_time":
        time_ids = 6  # SDXL: original size, crop top-left, target size
        pooled = config.projection_class_embeddings_input_dim - time_ids * config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.zeros(batch, pooled, **like),
                                       "time_ids": torch.zeros(batch, time_ids, **like)}
    elif addition:
        raise EvalkitError(f"this UNet uses addition_embed_type={addition!r}, which evalkit does not profile",
                           "profile text-to-image UNets (SD 1.x/2.x/XL-style)")
    if getattr(config, "time_cond_proj_dim", None):
        kwargs["timestep_cond"] = torch.zeros(batch, config.time_cond_proj_dim, **like)
    return kwargs


def denoiser_macs(module: torch.nn.Module, family: str, latent_side: int, context_len: int,
                  batch: int = 1) -> MacCount:
    kwargs = denoiser_inputs(module, family, batch, latent_side, context_len)
    return _guarded(type(module).__name__, latent_side, lambda: count_macs(module, lambda: module(**kwargs)))


def vae_decode_macs(vae: torch.nn.Module, latent_side: int) -> MacCount:
    """One `vae.decode` of a single latent (what turns the final latent into the image)."""
    from diffusers.models import ModelMixin

    if not isinstance(vae, ModelMixin):  # diffusers VAEs carry the config and `decode` used here
        raise EvalkitError(f"evalkit cannot profile the decode of a {type(vae).__name__} VAE",
                           "profile diffusers pipelines, whose VAEs are diffusers models")
    channels = vae.config.latent_channels
    latent = torch.zeros(1, channels, latent_side, latent_side, **_like(vae))
    return _guarded(type(vae).__name__, latent_side, lambda: count_macs(vae, lambda: vae.decode(latent)))


def text_encoder_macs(encoder: torch.nn.Module, length: int) -> MacCount:
    """One forward of one prompt padded to `length` tokens (pipelines pad to max length)."""
    ids = torch.zeros(1, length, dtype=torch.long, device=_like(encoder)["device"])
    return _guarded(type(encoder).__name__, length, lambda: count_macs(encoder, lambda: encoder(input_ids=ids)))


def _guarded(name: str, size: int, count: Callable[[], MacCount]) -> MacCount:
    try:
        return count()
    except EvalkitError:
        raise
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EvalkitError(f"a {name} forward at size {size} failed while counting MACs: {first[:200]}",
                           "check --resolution (too large for a transformer's position embedding, or not a "
                           "multiple of the downsampling) and the config") from e
