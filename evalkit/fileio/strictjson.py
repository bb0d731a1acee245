"""Strict JSON values: NaN and infinities become null.

Browsers, jq and most JSON parsers reject NaN/Infinity, and a metric can be undefined on a
tiny subset (a KID on one image), so every JSON file evalkit writes for others to read passes
its values through `finite` first.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def finite(value: Any) -> Any:
    """`value` with every non-finite float (Python or numpy) replaced by None, containers walked."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
