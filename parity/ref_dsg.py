"""DSG's own scoring of its released VQA answers, from a checkout of j-min/DSG; runs INSIDE the reference venv.

    .venv-ref/bin/python parity/ref_dsg.py DSG_CHECKOUT OUT.json [VQA_MODEL [T2I_MODEL]]

DSG is not a package (no PyPI release), so this runs the repository's own modules from a checkout
(`fetch github:j-min/DSG`; the output records the commit): `dsg.data_utils` (its parse of
dsg-1k-anns.csv, its released answers, `load_vqa_output`, `get_data_category`) and
`dsg.vqa_utils.calc_vqa_score`, in the loop of its scripts/t2i_eval_dsg1k.py for one VQA model
(default mplug-large) and one T2I model (default sd2dot1): per item `average_score_with_dependency`,
and the per-category and overall means the script prints.

Two stand-ins, neither read on this path: `dsg.vqa_utils` imports openai at module level (for its
GPT-4o wrapper), stubbed when not installed; and `data_utils` loads TIFA's 25,829-question file
(`tifa_ann/tifa_v1.0_question_answers.json`, used only for TIFA-question rows, qg_model 'tifa') and
asserts it covers the 160 TIFA160 ids — when a snapshot lacks that large file, a stand-in listing
just those 160 ids is written (the output says which was used). The output is what tests/test_dsg.py
replays evalkit's scoring against.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import types
from pathlib import Path

TIFA_FILE = Path("tifa_ann") / "tifa_v1.0_question_answers.json"


def tifa_stand_in(root: Path) -> str:
    path = root / TIFA_FILE
    if path.is_file() and path.stat().st_size > 0:
        return "the checkout's"
    with open(root / "dsg" / "data" / "tifa160-likert-anns.csv", encoding="utf-8", newline="") as f:
        ids = sorted({row["source_id"] for row in csv.DictReader(f)})
    path.write_text(json.dumps([{"id": i} for i in ids]), encoding="utf-8")
    return f"stand-in of {len(ids)} ids (TIFA-question rows are not scored here)"


def main(checkout: str, out: str, vqa_model: str = "mplug-large", t2i_model: str = "sd2dot1") -> None:
    root = Path(checkout).resolve()
    tifa_file = tifa_stand_in(root)
    sys.path.insert(0, str(root))
    os.chdir(root)  # data_utils opens tifa_ann/ and vqa_answers_release/ relative to the working folder
    try:
        import openai  # noqa: F401
    except ImportError:
        sys.modules["openai"] = types.ModuleType("openai")
    import numpy as np
    from dsg import data_utils
    from dsg.vqa_utils import calc_vqa_score

    frame = data_utils.all_vqa_dfs[("dsg", vqa_model, t2i_model)]
    items = {}
    for item_id in data_utils.all_dsg1k_item_ids:
        qa_output = data_utils.load_vqa_output(frame[frame.item_id == item_id], qg_model="dsg", item_id=item_id)
        try:
            qid2answer = {qa["question_id"]: qa["vqa_answer"] for qa in qa_output}
        except Exception:
            qid2answer = {1: ""}
        result = calc_vqa_score(qid2answer, data_utils.dsg_id2dependency[item_id])
        items[item_id] = {"with_dependency": result["average_score_with_dependency"],
                          "without_dependency": result["average_score_without_dependency"]}
    categories = {}
    for category in [*data_utils.all_data_categories, "all"]:
        ids = [i for i in items if category == "all" or data_utils.get_data_category(i) == category]
        categories[category] = {"n": len(ids), "score": float(np.mean([items[i]["with_dependency"] for i in ids]))}
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    # a snapshot extracted without .git: DSG_COMMIT names the commit it was extracted from
    commit = commit.strip() or os.environ.get("DSG_COMMIT", "unknown (not a git checkout)")
    document = {"source": "https://github.com/j-min/DSG", "commit": commit,
                "vqa_model": vqa_model, "t2i_model": t2i_model, "tifa_question_file": tifa_file,
                "categories": categories, "items": items}
    Path(out).write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:5])
