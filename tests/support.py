"""Small helpers shared by test modules (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image


def png_pixels(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return torch.from_numpy(np.array(im)).to(torch.int16)


def write_random_pngs(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[Path]:
    """`i.png` of uniform random pixels per (width, height), for parity inputs."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, (w, h) in enumerate(sizes):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def score_pairs(metric: Any, paths: list[Path], texts: list[str], prompt_set: str = "coco-10k") -> tuple[list, list]:
    """Each image with its text through `prepare` (as the engine hands it: RGB) and one `score_batch`
    over all of them: (prepared inputs, each pair's headline value)."""
    from evalkit.metrics.api import ImageItem
    from evalkit.prompts.sets import Prompt

    items, prepared = [], []
    for k, (path, text) in enumerate(zip(paths, texts, strict=True)):
        items.append(ImageItem(prompt_set, Prompt(str(k), text), 0, path.name, path, ""))
        with Image.open(path) as image:
            prepared.append(metric.prepare(items[-1], image.convert("RGB")))
    return prepared, [r[0]["value"] for r in metric.score_batch(items, prepared)]


def manifest_hashes(step_dir: Path) -> dict[str, str]:
    """file -> sha256 over every manifest of a step folder (latest row wins)."""
    rows: dict[str, str] = {}
    for path in sorted(step_dir.glob("manifest*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["file"]] = row["sha256"]
    return rows


def image_files(step_dir: Path) -> dict[str, Path]:
    return {str(p.relative_to(step_dir)): p for p in sorted((step_dir / "images").rglob("*.png"))}


def assert_images_close(a: Path, b: Path, max_share: float = 0.01) -> None:
    """The seeding contract's tolerance after quantisation: at most one 8-bit level apart,
    in at most `max_share` of the values (batch composition changes the last float bits)."""
    pa, pb = png_pixels(a), png_pixels(b)
    assert pa.shape == pb.shape
    diff = (pa - pb).abs()
    assert int(diff.max()) <= 1, f"{a.name}: max difference {int(diff.max())} levels"
    assert float((diff > 0).float().mean()) <= max_share


def direct_item(i: int, text: str, prompt_set: str):
    """An ImageItem for scoring in-memory images directly (no step folder behind it)."""
    from evalkit.metrics.api import ImageItem
    from evalkit.prompts.sets import Prompt

    return ImageItem(prompt_set=prompt_set, prompt=Prompt(id=f"p{i}", text=text), k=0, file=f"images/{i}.png",
                     path=Path(f"images/{i}.png"), sha256="")


def score_directly(metric, prompts, images, batch_size: int, prompt_set: str):
    """prepare + score_batch over in-memory images in batches of `batch_size`: the engine's inner loop."""
    items = [direct_item(i, p, prompt_set) for i, p in enumerate(prompts)]
    prepared = [metric.prepare(it, im) for it, im in zip(items, images, strict=True)]
    records = []
    for start in range(0, len(items), batch_size):
        records += metric.score_batch(items[start:start + batch_size], prepared[start:start + batch_size])
    return records


REPO = Path(__file__).resolve().parents[1]
REF_PYTHON = REPO / ".venv-ref" / "bin" / "python"


def parity_marks() -> list:
    """Marks for a module that compares with the reference packages in .venv-ref."""
    import pytest

    return [pytest.mark.parity,
            pytest.mark.skipif(not REF_PYTHON.exists(),
                               reason=f"no reference venv at {REF_PYTHON} "
                                      "(build it: bash parity/install-reference.sh)")]


def run_reference(script: str, spec: dict, tmp: Path, timeout: int = 900) -> dict:
    """Run parity/<script>.py in the reference venv on `spec` (JSON) and return its JSON output."""
    import os
    import subprocess
    import sys

    spec_file, out_file = tmp / f"{script}.spec.json", tmp / f"{script}.out.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
    proc = subprocess.run([str(REF_PYTHON), str(REPO / "parity" / f"{script}.py"), str(spec_file), str(out_file)],
                          env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-6000:])
    assert proc.returncode == 0, f"{script} failed in the reference venv:\n{proc.stderr[-3000:]}"
    return json.loads(out_file.read_text(encoding="utf-8"))
