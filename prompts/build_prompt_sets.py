"""Regenerate every shipped prompt set from the upstream data, byte for byte.

    python prompts/build_prompt_sets.py --shared ../shared/data          # rewrite prompts/*/
    python prompts/build_prompt_sets.py --shared ../shared/data --check  # compare only

The shipped files are the source of truth for evaluation; this script exists so that
anyone can see, and re-check, how they were made from the upstream files. Output is
deterministic: the same inputs give the same bytes, the same sha256 and fingerprints.

COCO-10K is drawn once: `numpy.random.default_rng(COCO_10K_SEED).choice(30000, 10000,
replace=False)` over the rows of coco_30k.csv in file order, and the prompts are KEPT IN
DRAW ORDER (not sorted), so that every prefix `head(n)` is itself a uniform random sample
of the 30K list. NumPy does not promise that Generator streams never change between
versions (NEP 19); if a future NumPy draws differently, `--check` will say so and the
shipped list stays the reference.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.fileio.hashing import sha256_bytes
from evalkit.prompts.sets import DATA_FILE_NAME, MANIFEST_NAME, Prompt, PromptSet

COCO_10K_SEED = 20240101
COCO_10K_SIZE = 10_000
SET_VERSION = "1"  # bump when a set's content changes; the fingerprint changes with it
TIFA_SOURCES = {"coco": 2000, "partiprompt": 1420, "paintskill": 500, "drawbench": 161}
LICENSE_NOTE = "LICENSE-NOTE.txt"
QUESTIONS_FILE = "questions.json"

SetFiles = dict[str, bytes]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_table(path: Path, delimiter: str) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def jsonl_bytes(prompts: tuple[Prompt, ...]) -> bytes:
    lines = (json.dumps(p.to_record(), ensure_ascii=False) + "\n" for p in prompts)
    return "".join(lines).encode("utf-8")


def licence_note(shared_note: Path, change: str) -> bytes:
    text = shared_note.read_text(encoding="utf-8").rstrip("\n")
    return (text + "\n\nChanges by evalkit (prompts/build_prompt_sets.py): " + change + "\n").encode("utf-8")


def package_set(
    pset: PromptSet,
    description: str,
    note: bytes,
    derived_from: list[Path],
    shared: Path,
    extra_files: SetFiles | None = None,
    build: dict[str, Any] | None = None,
    tag_kinds: tuple[str, ...] = (),
) -> SetFiles:
    """The files of one set folder: data, licence note, extras, and the manifest pinning them."""
    files: SetFiles = {DATA_FILE_NAME: jsonl_bytes(pset.prompts), LICENSE_NOTE: note, **(extra_files or {})}
    manifest: dict[str, Any] = {
        "name": pset.name,
        "version": pset.version,
        "description": description,
        "source": pset.source,
        "licence": pset.licence,
        "n": len(pset),
        "fingerprint": pset.fingerprint,
        "files": {name: sha256_bytes(data) for name, data in sorted(files.items())},
        "derived_from": {
            str(path.relative_to(shared)): sha256_bytes(path.read_bytes()) for path in derived_from
        },
    }
    if tag_kinds:  # what each position of a prompt's tags means, for per-category results
        manifest["tag_kinds"] = list(tag_kinds)
    if build:
        manifest["build"] = build
    files[MANIFEST_NAME] = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    return files


# --------------------------------------------------------------------------- TIFA v1.0

TIFA_SOURCE = "https://github.com/Yushi-Hu/tifa/blob/8e37050f44ab4ee681e4251f3c8a9d4cc86e901e/"
TIFA_LICENCE = (
    "Apache-2.0; prompts from COCO (CC BY 4.0), PartiPrompts, DrawBench, PaintSkills (see LICENSE-NOTE.txt)"
)


def tifa_prompts(entries: list[dict[str, Any]]) -> tuple[Prompt, ...]:
    """TIFA text inputs as prompts: ids and order kept, tag = the id's source prefix."""
    prompts = []
    for entry in entries:
        source = entry["id"].split("_", 1)[0]
        if source not in TIFA_SOURCES:
            raise SystemExit(f"unexpected TIFA id prefix in {entry['id']!r}")
        data = {"coco_val_id": entry["coco_val_id"]} if "coco_val_id" in entry else {}
        prompts.append(Prompt(entry["id"], entry["caption"], (source,), data))
    return tuple(prompts)


def build_tifa(shared: Path) -> SetFiles:
    src = shared / "tifa_v1.0" / "tifa_v1.0_text_inputs.json"
    prompts = tifa_prompts(read_json(src))
    counts = Counter(p.tags[0] for p in prompts)
    if dict(counts) != TIFA_SOURCES:
        raise SystemExit(f"TIFA source counts changed: {dict(counts)}")
    pset = PromptSet(
        "tifa-v1.0", SET_VERSION, TIFA_SOURCE + "tifa_v1.0/tifa_v1.0_text_inputs.json", TIFA_LICENCE, prompts
    )
    note = licence_note(
        shared / "tifa_v1.0" / "LICENSE-NOTE.txt",
        "the 4,081 entries of tifa_v1.0_text_inputs.json re-formatted as prompts.jsonl in their "
        "original order; id kept, caption -> text (verbatim, whitespace included), tags = [id prefix], "
        "coco_val_id kept as a string under data. The question file is not shipped (see above).",
    )
    desc = "TIFA v1.0 benchmark prompts (4,081: COCO 2000, PartiPrompts 1420, PaintSkills 500, DrawBench 161)"
    return package_set(pset, desc, note, [src], shared, tag_kinds=("source",))


def build_tifa_sample(shared: Path) -> SetFiles:
    src = shared / "tifa_v1.0" / "sample" / "sample_text_inputs.json"
    questions = shared / "tifa_v1.0" / "sample" / "sample_question_answers.json"
    pset = PromptSet(
        "tifa-v1.0-sample",
        SET_VERSION,
        TIFA_SOURCE + "sample/sample_text_inputs.json",
        TIFA_LICENCE,
        tifa_prompts(read_json(src)),
    )
    note = licence_note(
        shared / "tifa_v1.0" / "LICENSE-NOTE.txt",
        "sample/sample_text_inputs.json re-formatted as prompts.jsonl like tifa-v1.0; "
        "sample/sample_question_answers.json copied unchanged as questions.json.",
    )
    desc = "The 2-prompt, 19-question TIFA sample from the reference repository, for demos and tests"
    extra = {QUESTIONS_FILE: questions.read_bytes()}
    return package_set(pset, desc, note, [src, questions], shared, extra, tag_kinds=("source",))


# --------------------------------------------------------------------------- COCO-10K


def draw_coco_10k(
    rows: list[dict[str, str]], seed: int = COCO_10K_SEED, n: int = COCO_10K_SIZE
) -> list[dict[str, str]]:
    """n rows drawn without replacement, in draw order (see the module docstring)."""
    picks = np.random.default_rng(seed).choice(len(rows), size=n, replace=False)
    return [rows[int(i)] for i in picks]


def coco_prompt(row: dict[str, str]) -> Prompt:
    image_id = int(row["image_id"])
    data = {"coco_image_id": image_id, "coco_file": f"COCO_val2014_{image_id:012d}.jpg"}
    return Prompt(f"coco_{image_id}", row["prompt"], ("coco",), data)


def build_coco_10k(shared: Path) -> SetFiles:
    src = shared / "coco2014" / "coco_30k.csv"
    rows = read_table(src, ",")
    if len(rows) != 30_000 or len({r["image_id"] for r in rows}) != 30_000:
        raise SystemExit("coco_30k.csv no longer has 30,000 distinct image ids")
    pset = PromptSet(
        "coco-10k",
        SET_VERSION,
        "https://github.com/rohitgandikota/erasing/blob/25613d27892326e0c7770f7f3555bea4be150089/"
        "data/coco_30k.csv",
        "CC BY 4.0 (MS-COCO captions, attribute Lin et al. 2014; see LICENSE-NOTE.txt)",
        tuple(coco_prompt(r) for r in draw_coco_10k(rows)),
    )
    note = licence_note(
        shared / "coco2014" / "LICENSE-NOTE.txt",
        f"10,000 of the 30,000 rows drawn with numpy.random.default_rng({COCO_10K_SEED})"
        f".choice(30000, 10000, replace=False) over the rows in file order, kept in draw order; "
        "prompt -> text (verbatim, trailing spaces and newlines of the COCO annotations included), "
        "id = coco_<image id>, data = coco_image_id and the val2014 file name; "
        "the source and evaluation_seed columns are dropped.",
    )
    desc = "10,000 MS-COCO 2014 val captions (one per image) drawn at random from the COCO-30k list"
    build = {
        "method": "numpy.random.default_rng(seed).choice(len(rows), size=n, replace=False)",
        "seed": COCO_10K_SEED,
        "n": COCO_10K_SIZE,
        "order": "draw order",
    }
    return package_set(pset, desc, note, [src], shared, build=build, tag_kinds=("source",))


# --------------------------------------------------------------------------- PartiPrompts


def build_partiprompts(shared: Path) -> SetFiles:
    src = shared / "partiprompts" / "PartiPrompts.tsv"
    rows = read_table(src, "\t")
    prompts = tuple(
        Prompt(f"parti_{i:04d}", r["Prompt"], (r["Category"], r["Challenge"]), {"note": r["Note"]})
        for i, r in enumerate(rows, start=1)
    )
    pset = PromptSet(
        "partiprompts",
        SET_VERSION,
        "https://github.com/google-research/parti/blob/5a657978134374ce28973948331b319adef164bd/"
        "PartiPrompts.tsv",
        "Apache-2.0",
        prompts,
    )
    note = licence_note(
        shared / "partiprompts" / "LICENSE-NOTE.txt",
        "re-formatted as prompts.jsonl in file order; ids parti_0001... assigned by evalkit; "
        "tags = [Category, Challenge]; data.note = Note (empty string when the file has none).",
    )
    desc = "PartiPrompts (P2): 1,632 prompts tagged with category and challenge"
    return package_set(pset, desc, note, [src], shared, tag_kinds=("category", "challenge"))


# --------------------------------------------------------------------------- ImageReward


def build_imagereward(shared: Path) -> SetFiles:
    src = shared / "imagereward_benchmark" / "benchmark-prompts.json"
    prompts = tuple(Prompt(e["id"], e["prompt"]) for e in read_json(src))
    pset = PromptSet(
        "imagereward-benchmark",
        SET_VERSION,
        "https://github.com/THUDM/ImageReward/blob/c1392c6dd0fd6ecd6d416c96959ab744a6d0a8fb/"
        "benchmark/benchmark-prompts.json",
        "Apache-2.0 (ImageReward repository; prompts from DiffusionDB; see LICENSE-NOTE.txt)",
        prompts,
    )
    note = licence_note(
        shared / "imagereward_benchmark" / "LICENSE-NOTE.txt",
        "re-formatted as prompts.jsonl in file order; id kept, prompt -> text; no tags or data.",
    )
    desc = "The 100 real-user (DiffusionDB) prompts of the ImageReward benchmark"
    return package_set(pset, desc, note, [src], shared)


# --------------------------------------------------------------------------- DSG-1k

DSG_UPSTREAM = Path(__file__).resolve().parent / "upstream"  # not in ../shared/data: kept in this repository
DSG_SOURCE = "https://github.com/j-min/DSG/blob/7330119a39f76ff90e619a8bd3ff321e71aa986b/dsg/data/dsg-1k-anns.csv"
DSG_LICENCE = "Apache-2.0 (DSG questions); prompts from their source datasets (see LICENSE-NOTE.txt)"
DSG_SOURCES = {"tifa160": 160, "whoops": 100, "localized_narratives": 100, "posescript": 100, "vrd": 100,
               "countbench": 100, "midjourney": 100, "drawtext": 100, "stanford_paragraph": 100, "diffusiondb": 100}


def dsg_prompts(rows: list[dict[str, str]]) -> tuple[Prompt, ...]:
    """One prompt per DSG item (first-appearance order), its questions under data.dsg in proposition order."""
    items: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    for row in rows:
        text, questions = items.setdefault(row["item_id"], (row["text"], []))
        if row["text"] != text:
            raise SystemExit(f"DSG item {row['item_id']} has two texts")
        questions.append({"id": int(row["proposition_id"]), "question": row["question_natural_language"],
                          "dependency": row["dependency"],
                          "category": row["category_broad"], "detail": row["category_detailed"],
                          "tuple": row["tuple"], "keywords": row["keywords"]})
    prompts = []
    for item_id, (text, questions) in items.items():
        source = item_id.rsplit("_", 1)[0]
        if source not in DSG_SOURCES:
            raise SystemExit(f"unexpected DSG item prefix in {item_id!r}")
        questions.sort(key=lambda q: q["id"])
        prompts.append(Prompt(item_id, text, (source,), {"dsg": questions}))
    return tuple(prompts)


def build_dsg(shared: Path) -> SetFiles:
    del shared  # the DSG file is kept in this repository (prompts/upstream/dsg/)
    src = DSG_UPSTREAM / "dsg" / "dsg-1k-anns.csv"
    prompts = dsg_prompts(read_table(src, ","))
    counts = Counter(p.tags[0] for p in prompts)
    if dict(counts) != DSG_SOURCES:
        raise SystemExit(f"DSG-1k source counts changed: {dict(counts)}")
    pset = PromptSet("dsg-1k", SET_VERSION, DSG_SOURCE, DSG_LICENCE, prompts)
    note = licence_note(
        DSG_UPSTREAM / "dsg" / "LICENSE-NOTE.txt",
        "the rows of dsg-1k-anns.csv grouped by item_id into one prompt each (first-appearance order); "
        "id = item_id, text verbatim, tags = [item_id prefix], data.dsg = the item's questions in proposition "
        "order: id (proposition_id, an integer), question (question_natural_language), dependency (the parent "
        "ids as upstream writes them, e.g. \"1,2\", 0 = none, 10 rows (in 8 items) with a stray word such as "
        "\"5, right\"), "
        "category (category_broad), detail (category_detailed), tuple, keywords - all verbatim.",
    )
    desc = "DSG-1k: 1,060 prompts with their 8,182 Davidsonian scene-graph questions and dependencies"
    return package_set(pset, desc, note, [src], DSG_UPSTREAM, tag_kinds=("source",))


BUILDERS: dict[str, Callable[[Path], SetFiles]] = {
    "dsg-1k": build_dsg,
    "tifa-v1.0": build_tifa,
    "tifa-v1.0-sample": build_tifa_sample,
    "coco-10k": build_coco_10k,
    "partiprompts": build_partiprompts,
    "imagereward-benchmark": build_imagereward,
}


def build_all(shared: Path) -> dict[str, SetFiles]:
    """Every set's files, in memory, so that writing and checking share one code path."""
    if not shared.is_dir():
        raise SystemExit(f"shared data folder {shared} not found (pass --shared PATH/TO/shared/data)")
    return {name: builder(shared) for name, builder in BUILDERS.items()}


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; shipped data must be world-readable
    os.replace(tmp, path)


def write_sets(out: Path, sets: dict[str, SetFiles]) -> None:
    for name, files in sets.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for stale in sorted(set(p.name for p in folder.iterdir() if p.is_file()) - set(files)):
            (folder / stale).unlink()
        # The manifest last: a folder is only trusted once its manifest matches its files.
        for filename in sorted(files, key=lambda f: f == MANIFEST_NAME):
            write_atomic(folder / filename, files[filename])


def differences(out: Path, sets: dict[str, SetFiles]) -> list[str]:
    problems = []
    for name, files in sets.items():
        for filename, data in files.items():
            path = out / name / filename
            if not path.is_file() or path.read_bytes() != data:
                problems.append(str(path))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True, help="the shared data folder (../shared/data)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="default: prompts/")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if anything differs")
    args = parser.parse_args(argv)
    sets = build_all(args.shared.resolve())
    if args.check:
        problems = differences(args.out, sets)
        for problem in problems:
            print(f"differs: {problem}", file=sys.stderr)
        print("prompt sets up to date" if not problems else f"{len(problems)} file(s) differ")
        return 1 if problems else 0
    write_sets(args.out, sets)
    for name, files in sets.items():
        manifest = json.loads(files[MANIFEST_NAME])
        print(f"{name}: {manifest['n']} prompts, fingerprint {manifest['fingerprint'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
