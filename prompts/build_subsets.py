"""Regenerate the shipped prompt subsets (prompts/subsets/*.json), byte for byte.

    python prompts/build_subsets.py          # rewrite prompts/subsets/
    python prompts/build_subsets.py --check  # compare only; exit 1 if anything differs

`smoke` (`--subset smoke`, for CI) is small enough to generate and score in minutes on one GPU
while still touching every kind of prompt the full benchmark has:
- tifa-v1.0: 160 of the 4,081 prompts, stratified by TIFA source (coco, partiprompt, paintskill,
  drawbench) in proportion to the source's share (largest-remainder rounding), drawn per source
  with `numpy.random.default_rng(SMOKE_SEED)`: for each source in order of first appearance,
  `choice(len(source prompts), size=k, replace=False)` over that source's prompts in set order.
  The chosen ids are kept in set order.
- coco-10k: its first 1,000 captions. coco-10k is already a seeded random draw kept in draw
  order, so every prefix is itself a uniform random sample of the 30K list.

The subsets are derived from the shipped sets only, so no upstream data is needed. NumPy does
not promise Generator streams never change (NEP 19); if one ever draws differently, `--check`
says so and the shipped file stays the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.prompts.sets import PromptSet, load_prompt_set
from evalkit.prompts.subsets import SUBSET_SCHEMA, content_sha256

SMOKE_SEED = 20241122
SMOKE_TIFA = 160
SMOKE_COCO = 1000
OUT = Path(__file__).resolve().parent / "subsets"


def allocate(counts: dict[str, int], total: int) -> dict[str, int]:
    """`total` split in proportion to `counts` (largest remainder; ties go to the earlier stratum)."""
    size = sum(counts.values())
    exact = {k: total * c / size for k, c in counts.items()}
    shares = {k: int(v) for k, v in exact.items()}
    order = sorted(counts, key=lambda k: (-(exact[k] - shares[k]), list(counts).index(k)))
    for key in order[:total - sum(shares.values())]:
        shares[key] += 1
    return shares


def stratified_ids(pset: PromptSet, n: int, seed: int) -> tuple[list[str], dict[str, int]]:
    """n ids stratified by each prompt's first tag (its source), in set order, and the per-stratum counts."""
    strata: dict[str, list[str]] = {}
    for prompt in pset:
        strata.setdefault(prompt.tags[0], []).append(prompt.id)
    counts = allocate({k: len(v) for k, v in strata.items()}, n)
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for key, ids in strata.items():
        chosen.update(ids[int(i)] for i in rng.choice(len(ids), size=counts[key], replace=False))
    return [p.id for p in pset if p.id in chosen], counts


def set_entry(parent: PromptSet, ids: list[str], method: dict[str, Any]) -> dict[str, Any]:
    return {"parent_fingerprint": parent.fingerprint, "parent_n": len(parent), "n": len(ids),
            "fingerprint": parent.select(ids).fingerprint, **method, "ids": ids}


def smoke_subset() -> dict[str, Any]:
    tifa = load_prompt_set("tifa-v1.0")
    coco = load_prompt_set("coco-10k")
    tifa_ids, strata = stratified_ids(tifa, SMOKE_TIFA, SMOKE_SEED)
    payload: dict[str, Any] = {
        "schema": SUBSET_SCHEMA,
        "name": "smoke",
        "description": (f"CI smoke subset: {SMOKE_TIFA} tifa-v1.0 prompts stratified by source + the first "
                        f"{SMOKE_COCO} coco-10k captions. Results compare only with runs on this subset."),
        "generated_by": "prompts/build_subsets.py",
        "sets": {
            "tifa-v1.0": set_entry(tifa, tifa_ids, {
                "method": "stratified random draw by source (tags[0]), proportional, largest-remainder rounding",
                "draw": "numpy.random.default_rng(seed); per source in order of first appearance: "
                        "choice(len(source prompts), size=k, replace=False); ids kept in set order",
                "seed": SMOKE_SEED, "strata": strata}),
            "coco-10k": set_entry(coco, [p.id for p in coco.prompts[:SMOKE_COCO]], {
                "method": f"head({SMOKE_COCO}): coco-10k is a seeded random draw kept in draw order"}),
        },
    }
    payload["sha256"] = content_sha256(payload)
    return payload


BUILDERS = {"smoke": smoke_subset}


def subset_bytes(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def build_all() -> dict[str, bytes]:
    return {f"{name}.json": subset_bytes(build()) for name, build in BUILDERS.items()}


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; shipped data must be world-readable
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="default: prompts/subsets/")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if anything differs")
    args = parser.parse_args(argv)
    files = build_all()
    if args.check:
        problems = [name for name, data in files.items()
                    if not (args.out / name).is_file() or (args.out / name).read_bytes() != data]
        for name in problems:
            print(f"differs: {args.out / name}", file=sys.stderr)
        print("subsets up to date" if not problems else f"{len(problems)} file(s) differ")
        return 1 if problems else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        write_atomic(args.out / name, data)
        print(f"{args.out / name}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
