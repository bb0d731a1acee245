"""evalkit: evaluate text-to-image diffusion checkpoints the way the scaling study did."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Exported lazily: `import evalkit` stays light (no torch/diffusers) until the API is used.
_LAZY = {"evaluate": "evalkit.evaluation.evaluator", "EvalResult": "evalkit.evaluation.evaluator"}
__all__ = ["EvalResult", "__version__", "evaluate"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'evalkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
