"""`evalkit check`, the CI gate: paired comparisons of real runs, the decision rule, refusals and outputs.

Runs are real: the tiny SD pipeline generates 8 coco-10k and the 2 TIFA sample prompts once per
module, scored with the demo's tiny CLIP and TIFA cards and a median-of-CLIP metric that is not
a ratio over prompts (so it takes check's FID route: re-created from its card, resampled through
`resampler`), then run.json is written as `evalkit score` writes it. Improved and regressed runs
are copies whose per-image records are rewritten in a controlled way and whose run.json is
rewritten by write_run_json from those records. Every verdict goes through the real entry point
(`evalkit.cli.app.main`), so exit codes are the ones CI sees.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import FAST_STEPS

from evalkit.fileio.jsonl import read_rows
from evalkit.gate.check import INCONCLUSIVE, decide, shares
from evalkit.generation.checkpoints import ResolveOptions, resolve
from evalkit.generation.generator import GenerateOptions, Generator
from evalkit.generation.protocol import GenerationRequest
from evalkit.metrics import registry
from evalkit.metrics.api import Metric, Record
from evalkit.metrics.clip_score import ClipScore
from evalkit.metrics.context import MetricContext
from evalkit.metrics.registry import create
from evalkit.prompts.sets import load_prompt_set
from evalkit.prompts.subsets import apply_subset
from evalkit.results.assemble import write_run_json
from evalkit.results.bootstrap import BootstrapSpec, paired_function_difference, paired_ratio_difference
from evalkit.scoring.engine import score_step

CPU = torch.device("cpu")
CLIP, TIFA, MEDIAN = "clip-tiny", "tifa-tiny", "clipmedian-tiny"
ALL_GATED = ("--max-drop", f"{CLIP}=0.01", "--max-drop", f"{TIFA}=0.01", "--max-drop", f"{MEDIAN}=0.01")

Edit = Callable[[int, list[Record]], list[Record]]  # (prompt position in id order, records) -> records


class MedianClip:
    """The median over prompts of CLIP score: not a ratio over prompts, so check resamples it like FID."""

    bootstrap_resamples = 200

    def __init__(self, card: Any, context: MetricContext) -> None:
        self.card = card
        self._clip = ClipScore(card, context)
        self.info = self._clip.info

    def fingerprint(self) -> str:
        return self._clip.fingerprint()

    def setup(self, device: torch.device) -> None:
        self._clip.setup(device)

    def prepare(self, item: Any, image: Any) -> Any:
        return self._clip.prepare(item, image)

    def score_batch(self, items: Sequence[Any], prepared: Sequence[Any]) -> list[list[Record]]:
        return self._clip.score_batch(items, prepared)

    def aggregate(self, records: Sequence[Record]) -> dict[str, Any]:
        return {"value": float(np.median([r["value"] for r in records])), "n": len(records)}

    def resampler(self, groups: Sequence[Sequence[Record]]) -> Callable[[np.ndarray], float]:
        per_prompt = np.array([np.mean([r["value"] for r in g]) for g in groups])
        return lambda indices: float(np.median(per_prompt[indices]))


@dataclass
class Runs:
    root: Path
    base: Path  # the step folder every variant is copied from
    limited: Path  # the same checkpoint on the first 4 coco-10k prompts only (as --limit 4 makes it)
    metrics: dict[str, Metric]

    def variant(self, name: str, edits: dict[str, Edit]) -> Path:
        """A copy of the base run whose records of the edited metrics are rewritten, then run.json rewritten."""
        dest = self.root / "variants" / name
        if dest.exists():
            return dest
        shutil.copytree(self.base, dest)
        run = json.loads((dest / "run.json").read_text(encoding="utf-8"))
        for metric, edit in edits.items():
            store = dest / run["metrics"][metric]["records"]
            rows = list(read_rows(store))
            order = sorted({row["prompt_id"] for row in rows})
            for row in rows:
                row["records"] = edit(order.index(row["prompt_id"]), row["records"])
            store.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        metrics = [self.metrics[m] for m in edits]
        write_run_json(dest, score_step(dest, metrics, CPU, quiet=True), metrics, datetime.now(timezone.utc))
        return dest

    def edited_json(self, name: str, change: Callable[[dict[str, Any]], None]) -> Path:
        """A copy of the base run whose run.json is edited directly (what check must refuse)."""
        dest = self.root / "edited" / name
        shutil.copytree(self.base, dest)
        path = dest / "run.json"
        run = json.loads(path.read_text(encoding="utf-8"))
        change(run)
        path.write_text(json.dumps(run), encoding="utf-8")
        return dest


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, sd_dir: Path) -> Iterator[Runs]:
    from evalkit.tiny.clip import build_tiny_clip, write_card
    from evalkit.tiny.tifa_models import write_tiny_git, write_tiny_mpnet

    root = tmp_path_factory.mktemp("check")
    models = root / "models"
    builders = {"tiny-clip": build_tiny_clip, "tiny-git": write_tiny_git, "tiny-mpnet": write_tiny_mpnet}
    for name, build in builders.items():
        build(models / name)
    cards = models / "cards"
    cards.mkdir()
    clip_models = {"clip": models / "tiny-clip"}
    card_paths = [write_card(cards / "clip.yaml", CLIP, "clip_score", "coco-10k", clip_models),
                  write_card(cards / "tifa.yaml", TIFA, "tifa", "tifa-v1.0-sample",
                             {"vqa": models / "tiny-git", "sentence": models / "tiny-mpnet"},
                             params={"vqa_backend": "git", "questions": "sample"}),
                  write_card(cards / "median.yaml", MEDIAN, "median_clip", "coco-10k", clip_models)]
    with pytest.MonkeyPatch.context() as mp:
        median = registry.Implementation(factory=f"{__name__}:MedianClip")
        mp.setattr(registry, "BUILTINS", MappingProxyType({**registry.BUILTINS, "median_clip": median}))
        metrics = {m.info.name: m for m in (create(str(p)) for p in card_paths)}
        ref = resolve(str(sd_dir), ResolveOptions())[0]
        coco, sample = load_prompt_set("coco-10k"), load_prompt_set("tifa-v1.0-sample")
        steps = {}
        for label, sets, scored in (("base", [coco.head(8), sample], list(metrics.values())),
                                    ("limited", [coco.head(4)], [metrics[CLIP]])):
            options = GenerateOptions(out=root / label, batch_size=8, quiet=True)
            step = Generator(GenerationRequest(steps=FAST_STEPS), options).run_one(ref, sets).step_dir
            write_run_json(step, score_step(step, scored, CPU, quiet=True), scored, datetime.now(timezone.utc))
            steps[label] = step
        yield Runs(root, steps["base"], steps["limited"], metrics)


def shift_clip(delta: float | Callable[[int], float]) -> Edit:
    def edit(position: int, records: list[Record]) -> list[Record]:
        d = delta(position) if callable(delta) else delta
        return [{**r, "value": r["value"] + d, "cosine": r["cosine"] + d} for r in records]

    return edit


def tifa_all(correct: bool) -> Edit:
    return lambda position, records: [{**r, "correct": correct} for r in records]


def check(cli: Callable[..., tuple[int, str, str]], new: Path | str, base: Path | str,
          *args: str) -> tuple[int, str, str]:
    return cli("check", str(new), "--baseline", str(base), *args)


# -- verdicts ------------------------------------------------------------------------------------------------

def test_a_run_against_itself_passes_and_names_every_metric(runs, cli, tmp_path):
    md, junit = tmp_path / "check.md", tmp_path / "check.xml"
    code, out, err = check(cli, runs.base, runs.base / "run.json", *ALL_GATED, "--markdown", str(md),
                           "--junit", str(junit))
    assert code == 0, err
    text = md.read_text(encoding="utf-8")
    assert text in out  # printed too
    assert "✅ no regression (3 gated metrics)" in text
    for name in (CLIP, TIFA, MEDIAN):
        assert f"| `{name}`" in text
    assert "+0.0000 [+0.0000, +0.0000]" in text
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "0"
    assert {c.get("name") for c in suite.iter("testcase")} == {CLIP, TIFA, MEDIAN}
    assert not list(suite.iter("failure"))


def test_improved_run_passes(runs, cli):
    better = runs.variant("better", {CLIP: shift_clip(+0.05), TIFA: tifa_all(True), MEDIAN: shift_clip(+0.05)})
    code, out, err = check(cli, better, runs.base, *ALL_GATED)
    assert code == 0, err
    assert out.count("✅ improved") == 3
    assert "+0.0500 [+0.0500, +0.0500]" in out  # every resample moves by exactly the shift


def test_regressed_run_fails_with_junit_failures_on_the_regressed_metrics_only(runs, cli, tmp_path):
    worse = runs.variant("worse", {CLIP: shift_clip(-0.05), MEDIAN: shift_clip(-0.05)})
    junit = tmp_path / "check.xml"
    code, out, err = check(cli, worse, runs.base, *ALL_GATED, "--junit", str(junit))
    assert code == 1, err
    assert f"❌ regression in `{CLIP}`, `{MEDIAN}`" in out
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "2"
    failed = {c.get("name"): c.find("failure") for c in suite.iter("testcase")}
    assert failed[TIFA] is None
    for name in (CLIP, MEDIAN):
        assert failed[name] is not None and failed[name].get("type") == "regression"
        assert "P(worse than allowed) = 1.000 >= 0.95" in failed[name].get("message")
    median_row = next(line for line in out.splitlines() if line.startswith(f"| `{MEDIAN}`"))
    assert "-0.0500" in median_row
    assert f"`{MEDIAN}`: paired resampling of {MEDIAN} (card bootstrap_resamples), 200 resamples" in out


def test_a_drop_within_the_margin_passes_and_a_zero_margin_fails_it(runs, cli):
    slightly = runs.variant("slightly-worse", {CLIP: shift_clip(-0.005)})
    code, out, err = check(cli, slightly, runs.base, "--max-drop", f"{CLIP}=0.01")
    assert code == 0, err
    assert "✅ pass" in out and f"| `{TIFA}`" in out and "➖ not gated" in out  # TIFA: compared, no threshold
    code, out, _ = check(cli, slightly, runs.base, "--max-drop", f"{CLIP}=0")
    assert code == 1


def test_tifa_regression_from_flipped_answers(runs, cli):
    worse = runs.variant("tifa-wrong", {TIFA: tifa_all(False)})
    code, out, err = check(cli, worse, runs.base, "--max-drop", f"{TIFA}=0.01", "--metrics", TIFA)
    assert code == 1, err
    assert f"`{CLIP}` (left out by --metrics)" in out


def test_a_noisy_change_across_the_margin_is_inconclusive_and_does_not_fail(runs, cli):
    # Half the prompts lose 0.1, half gain 0.06: a mean change of -0.02 that a resample of 8 prompts
    # may put anywhere between -0.1 and +0.06, so the interval straddles the -0.01 margin.
    noisy = runs.variant("noisy", {CLIP: shift_clip(lambda i: -0.1 if i % 2 else 0.06)})
    code, out, err = check(cli, noisy, runs.base, "--max-drop", f"{CLIP}=0.01", "--metrics", CLIP)
    assert code == 0, err
    assert "⚠️ inconclusive" in out and "-0.0200 [" in out


# -- refusals: exit 2 ----------------------------------------------------------------------------------------

def test_different_protocol_fingerprint_is_refused(runs, cli):
    def other_protocol(run: dict[str, Any]) -> None:
        run["protocol"]["fingerprint"] = "0" * 64
        run["protocol"]["steps"] = 50

    code, _, err = check(cli, runs.edited_json("protocol", other_protocol), runs.base)
    assert code == 2
    assert "different generation protocols" in err and "steps 4 vs 50" in err


def test_a_limited_run_is_refused_against_the_full_one(runs, cli):
    code, _, err = check(cli, runs.limited, runs.base, "--max-drop", f"{CLIP}=0.01")
    assert code == 2
    assert "clip-tiny was scored on different prompts" in err and "8 prompts" in err and "4 " in err


def test_a_smoke_run_is_refused_against_a_full_run(runs, cli):
    smoke = apply_subset([load_prompt_set("coco-10k")], "smoke")[0]

    def on_smoke(run: dict[str, Any]) -> None:  # what a --subset smoke run records for coco-10k
        run["prompt_sets"]["coco-10k"] = {"fingerprint": smoke.fingerprint, "n": len(smoke)}
        for name in (CLIP, MEDIAN):
            run["metrics"][name]["prompt_set_fingerprint"] = smoke.fingerprint

    code, _, err = check(cli, runs.edited_json("smoke", on_smoke), runs.base)
    assert code == 2
    assert "different prompts" in err and "1000" in err and "--subset" in err


def test_different_metric_fingerprint_is_refused(runs, cli):
    def rescored(run: dict[str, Any]) -> None:
        run["metrics"][CLIP]["fingerprint"] = "f" * 64

    code, _, err = check(cli, runs.edited_json("metric-fp", rescored), runs.base)
    assert code == 2 and "computed differently" in err


def test_different_prompt_ids_are_refused(runs, cli):
    step = runs.edited_json("ids", lambda run: None)
    units = step / json.loads((step / "run.json").read_text(encoding="utf-8"))["metrics"][CLIP]["units"]
    value = json.loads(units.read_text(encoding="utf-8"))
    value["prompt_ids"][0] = "coco_1"
    units.write_text(json.dumps(value), encoding="utf-8")
    code, _, err = check(cli, step, runs.base, "--metrics", CLIP)
    assert code == 2 and "different prompt ids" in err and "coco_1" in err


def test_garbled_and_missing_inputs_exit_2(runs, cli, tmp_path):
    garbled = runs.edited_json("garbled", lambda run: None)
    text = (garbled / "run.json").read_text(encoding="utf-8")
    (garbled / "run.json").write_text(text[: len(text) // 2], encoding="utf-8")
    code, _, err = check(cli, garbled, runs.base)
    assert code == 2 and "unreadable" in err
    code, _, err = check(cli, runs.edited_json("bad-value", lambda r: r["metrics"][CLIP].update(value="high")),
                         runs.base)
    assert code == 2 and "garbled" in err
    code, _, err = check(cli, tmp_path / "nowhere", runs.base)
    assert code == 2 and "does not exist" in err
    no_units = runs.edited_json("no-units", lambda run: None)
    next((no_units / "scores" / CLIP).glob("*.units.json")).unlink()
    code, _, err = check(cli, no_units, runs.base, "--metrics", CLIP)
    assert code == 2 and "missing" in err


def test_threshold_mistakes_and_usage_errors_exit_2(runs, cli, tmp_path):
    code, _, err = check(cli, runs.base, runs.base, "--max-drop", "nosuch=0.1")
    assert code == 2 and "'nosuch'" in err
    code, _, err = check(cli, runs.base, runs.base, "--max-rise", f"{CLIP}=0.1")
    assert code == 2 and "higher is better" in err
    bad_file = tmp_path / "thresholds.yaml"
    bad_file.write_text(yaml.safe_dump({"confidence": 0.9, "metrics": {"tifaa": {"max_drop": 0.01}}}))
    code, _, err = check(cli, runs.base, runs.base, "--thresholds", str(bad_file))
    assert code == 2 and "unknown metric(s) tifaa" in err
    code, _, err = check(cli, runs.base, runs.base, "--confidence", "1.5")
    assert code == 2
    code, _, err = check(cli, runs.base, runs.base, "--resamples", "1")
    assert code == 2 and "error: --resamples must be at least 2 (got 1)" in err  # the library's error, as a flag
    code, _, err = cli("check", str(runs.base))  # no --baseline: a click usage error
    assert code == 2 and "--baseline" in err


def test_runs_without_a_metric_in_common_exit_2(runs, cli):
    only_tifa = runs.edited_json("only-tifa", lambda run: [run["metrics"].pop(m) for m in (CLIP, MEDIAN)])
    only_clip = runs.edited_json("only-clip", lambda run: run["metrics"].pop(TIFA))
    code, _, err = check(cli, only_tifa, only_clip)
    assert code == 2 and "no metric in common" in err


def test_the_shipped_thresholds_file_gates_known_metrics_only():
    from evalkit.gate.thresholds import load_thresholds

    shipped = load_thresholds(None)
    assert shipped.confidence == 0.95
    assert {n: (t.kind, t.margin) for n, t in shipped.by_metric.items()} == {
        "tifa": ("max_drop", 0.01), "fid": ("max_rise", 1.0), "clip": ("max_drop", 0.005),
        "imagereward": ("max_drop", 0.05), "hpsv2": ("max_drop", 0.005)}
    cards = {name: card.higher_is_better for name, card in registry.shipped_cards().items()}
    for name, threshold in shipped.by_metric.items():
        threshold.check_direction(cards[name])  # every entry's direction matches its card


# -- the leaderboard as baseline ------------------------------------------------------------------------------

def test_a_leaderboard_entry_is_a_baseline(runs, cli, tmp_path):
    from evalkit.publishing.leaderboard import merge_runs

    board = tmp_path / "board"
    merge_runs([runs.base], board)
    for ref in ("leaderboard:tiny-sd@final", "leaderboard:tiny-sd"):  # no step: the model's latest
        code, out, err = check(cli, runs.base, ref, "--leaderboard", str(board), *ALL_GATED)
        assert code == 0, err
        assert f"Baseline: `{(runs.base / 'run.json').resolve()}`" in out
    code, _, err = check(cli, runs.base, "leaderboard:tiny-sdd", "--leaderboard", str(board))
    assert code == 2 and "did you mean 'tiny-sd'" in err
    code, _, err = check(cli, runs.base, "leaderboard:tiny-sd", "--leaderboard", str(tmp_path / "none"))
    assert code == 2 and "no leaderboard" in err


# -- the statistics ------------------------------------------------------------------------------------------

def test_paired_bootstrap_matches_a_direct_loop_with_the_same_indices():
    rng = np.random.default_rng(7)
    n, spec = 13, BootstrapSpec(resamples=300, seed=3, level=0.9)  # 300 rows: more than one chunk of 128
    base_num, new_num = rng.random(n), rng.random(n)
    base_den, new_den = rng.integers(1, 4, n).astype(float), rng.integers(1, 4, n).astype(float)
    paired = paired_ratio_difference((new_num, new_den), (base_num, base_den), spec)

    draws = np.random.default_rng(spec.seed)
    indices = np.concatenate([draws.integers(0, n, size=(rows, n)) for rows in (128, 128, 44)])
    direct = np.array([new_num[i].sum() / new_den[i].sum() - base_num[i].sum() / base_den[i].sum() for i in indices])
    np.testing.assert_allclose(paired.samples, direct, rtol=1e-12)
    assert paired.difference == pytest.approx(new_num.sum() / new_den.sum() - base_num.sum() / base_den.sum())
    np.testing.assert_allclose(paired.ci, np.percentile(direct, [5, 95]), rtol=1e-12)

    seen: list[np.ndarray] = []  # the function route draws the very same indices for both runs
    paired_function_difference(n, lambda idx: seen.append(idx.copy()) or 0.0, lambda idx: 0.0, spec)
    np.testing.assert_array_equal(np.stack(seen[:-1]), indices)

    p_worse, p_better = shares(paired.samples, higher_is_better=True, margin=0.05)
    assert p_worse == np.mean(direct < -0.05) and p_better == np.mean(direct > 0)


@pytest.mark.parametrize(("p_worse", "p_better", "verdict"), [
    (0.95, 0.0, "regression"), (0.949, 0.0, INCONCLUSIVE), (0.051, 0.5, INCONCLUSIVE), (0.05, 0.5, "pass"),
    (0.0, 0.95, "improved"), (0.0, 0.94, "pass")])
def test_decision_rule_boundaries(p_worse, p_better, verdict):
    assert decide(p_worse, p_better, 0.95, gated=True) == verdict
    assert decide(p_worse, p_better, 0.95, gated=False) == "not gated"
