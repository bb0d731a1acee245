"""Lossless image files written so that a crash never leaves a file that looks finished."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from evalkit.fileio.hashing import sha256_bytes

# zlib level 4: a quarter of level 6's encode time on SD-sized images, ~5% larger files.
PNG_COMPRESS_LEVEL = 4


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 HxWx3 → PNG bytes without metadata (no timestamps), so bytes are reproducible."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, fsync, then rename: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_png(path: Path, pixels: np.ndarray) -> str:
    """Encode, write atomically, and return the sha256 of the bytes on disk."""
    data = encode_png(pixels)
    write_atomic(path, data)
    return sha256_bytes(data)
