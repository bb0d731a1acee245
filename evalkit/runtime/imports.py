"""Lazy references to code: "package.module:attribute", imported on first use.

Registries (metric implementations, VQA backends) declare their rows as plain data and name
the code behind each row this way, so reading a registry never imports torch-heavy modules:
`evalkit metrics list` and card checks stay cheap, and a broken optional dependency only
matters when the row that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import Any


def import_object(reference: str) -> Any:
    """The attribute `reference` names ("package.module:attribute", dots allowed after the colon)."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{reference!r} is not a 'package.module:attribute' reference")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target
