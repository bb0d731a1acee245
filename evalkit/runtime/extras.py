"""Optional parts of evalkit and the packages each needs: `pip install 'evalkit[fid]'`.

FID (torch-fidelity's Inception), HPSv2 (open_clip and its vision stack), the static site
(Jinja2) and reading saved `datasets` datasets are heavy or only needed by some users, so they
are extras rather than dependencies. The
code that needs one asks `require` first, which turns a missing package into one line naming the
extra to install instead of an ImportError from deep inside a run — and, for metrics, before the
first image is generated. pyproject.toml's `[project.optional-dependencies]` must match `EXTRAS`
(tests/test_dependencies.py checks both directions).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from types import MappingProxyType

from evalkit.errors import EvalkitError

# extra -> (import name, distribution name) of each package it installs
EXTRAS: Mapping[str, tuple[tuple[str, str], ...]] = MappingProxyType({
    "fid": (("torch_fidelity", "torch-fidelity"),),
    "hpsv2": (("open_clip", "open_clip_torch"), ("torchvision", "torchvision")),
    "site": (("jinja2", "jinja2"), ("markupsafe", "markupsafe")),
    "datasets": (("datasets", "datasets"),),
})


def installed(extra: str) -> bool:
    """Whether every package of `extra` is installed, found without importing it (listings stay fast)."""
    return all(importlib.util.find_spec(module) is not None for module, _ in EXTRAS[extra])


def require_installed(extra: str, purpose: str) -> None:
    """`require` without importing anything: a preflight that stays fast (before torch is imported)."""
    for module, distribution in EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            raise _missing(extra, distribution, purpose, f"no module named {module!r}")


def require(extra: str, purpose: str) -> None:
    """Refuse, in one line, to go on with `purpose` when a package of `extra` cannot be imported."""
    for module, distribution in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise _missing(extra, distribution, purpose, str(e)) from e


def _missing(extra: str, distribution: str, purpose: str, why: str) -> EvalkitError:
    return EvalkitError(f"{purpose} needs {distribution}, which is not installed ({why})".splitlines()[0],
                        f"pip install 'evalkit[{extra}]' (or 'evalkit[all]')")
