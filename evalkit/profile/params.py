"""Parameters per component: the budget split researchers trade (text encoder vs VAE vs denoiser).

Counts are `numel` over each module's parameters (tied weights once, as `parameters()`
yields them); buffers (position ids, running statistics) are not parameters and are not
counted. Bytes are parameters × the element size of the chosen dtype: what the weights take
when loaded in that dtype, not the size of any file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from evalkit.profile.configs import ComponentSpec


@dataclass(frozen=True)
class ComponentParams:
    name: str
    class_name: str
    role: str
    parameters: int
    note: str = ""

    def nbytes(self, dtype: torch.dtype) -> int:
        return self.parameters * dtype.itemsize


def count_parameters(module: torch.nn.Module) -> int:
    """Parameters of `module` (shared tensors once); meta parameters count like real ones."""
    return sum(p.numel() for p in module.parameters())


def component_params(modules: Mapping[str, torch.nn.Module], specs: Iterable[ComponentSpec]) -> list[ComponentParams]:
    """One row per component, largest first (the order the table reads best in)."""
    rows = [ComponentParams(s.name, s.class_name, s.role, count_parameters(modules[s.name]), s.note) for s in specs]
    return sorted(rows, key=lambda r: (-r.parameters, r.name))


def total_parameters(modules: Mapping[str, torch.nn.Module]) -> int:
    """All components together; a tensor shared between two components is counted once."""
    seen: set[int] = set()
    total = 0
    for module in modules.values():
        for parameter in module.parameters():
            if id(parameter) not in seen:
                seen.add(id(parameter))
                total += parameter.numel()
    return total


def params_record(rows: list[ComponentParams], total: int, dtype: torch.dtype) -> list[dict[str, Any]]:
    return [{"name": r.name, "class": r.class_name, "role": r.role, "parameters": r.parameters,
             "bytes": r.nbytes(dtype), "share": round(r.parameters / total, 6) if total else 0.0,
             **({"note": r.note} if r.note else {})} for r in rows]
