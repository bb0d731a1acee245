"""Versions and environment facts recorded next to every number."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import evalkit

TRACKED = ("torch", "diffusers", "transformers", "accelerate", "safetensors", "numpy", "pillow",
           "huggingface_hub", "tokenizers", "datasets", "open_clip_torch", "torchmetrics", "scipy")


def library_versions() -> dict[str, str]:
    versions = {"evalkit": evalkit.__version__, "python": platform.python_version()}
    for name in TRACKED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str:
    """The evalkit source commit when running from a checkout; empty for a wheel."""
    root = Path(evalkit.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return ""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def device_description(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device.type, "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info["name"] = torch.cuda.get_device_name(index)
        info["cuda"] = torch.version.cuda
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def provenance(device: torch.device) -> dict[str, Any]:
    return {"versions": library_versions(), "git_commit": git_commit(), "device": device_description(device),
            "platform": platform.platform()}
