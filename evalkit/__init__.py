"""evalkit: evaluate text-to-image diffusion checkpoints the way the scaling study did."""

from __future__ import annotations

__version__ = "0.1.0"
