"""prdc 0.2 (Naeem et al. 2020, clovaai/generative-evaluation-prdc): runs INSIDE the reference venv.

    .venv-ref/bin/python parity/ref_prdc.py SPEC.json OUT.json

SPEC.json (written by tests/test_parity_prdc.py): {"cases": [{"name": str, "real": .npy, "fake": .npy,
"nearest_k": int}]}, float32 feature matrices. OUT.json: {"cases": [{"name", "precision", "recall",
"density", "coverage"}], "versions": {...}} — `prdc.compute_prdc(real, fake, nearest_k)` as installed
(its sklearn pairwise distances, strict `<` against the k-th-neighbour radii).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
from prdc import compute_prdc


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    cases = []
    for case in spec["cases"]:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the sample counts
            values = compute_prdc(np.load(case["real"]), np.load(case["fake"]), int(case["nearest_k"]))
        cases.append({"name": case["name"], **{k: float(v) for k, v in values.items()}})
    versions = {name: metadata.version(name) for name in ("prdc", "scikit-learn", "numpy")}
    Path(out_path).write_text(json.dumps({"cases": cases, "versions": versions}), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
