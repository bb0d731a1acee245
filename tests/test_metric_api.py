"""The metric plugin contract, the registry and the score store, exercised through CLIP score."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from evalkit.errors import EXIT_USAGE, EvalkitError
from evalkit.metrics.preprocess import clip_transform
from evalkit.metrics.registry import create, create_many
from evalkit.prompts.sets import load_prompt_set
from evalkit.scoring.engine import score_step
from evalkit.tiny.clip import build_tiny_clip, write_card


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture
def card(tmp_path, clip_dir):
    return write_card(tmp_path / "clip-tiny.yaml", "clip-tiny", "clip_score", "coco-10k", {"clip": clip_dir})


@pytest.fixture
def step_dir(generate, sd_dir, small_sets, tmp_path):
    return generate(sd_dir, small_sets, out=tmp_path / "run")[0].step_dir


def _reference_cosines(clip_dir, step_dir, prompts):
    """Independent path: transformers' own PIL image processor and the plain model calls."""
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

    model = CLIPModel.from_pretrained(str(clip_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(clip_dir))
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    out = {}
    for prompt in prompts:
        image = Image.open(step_dir / f"images/coco-10k/{prompt.id}_0.png").convert("RGB")
        pixels = proc(images=image, return_tensors="pt")["pixel_values"]
        ids = tok(prompt.text, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            i = model.get_image_features(pixel_values=pixels).pooler_output
            t = model.get_text_features(**ids).pooler_output
        out[prompt.id] = float(torch.nn.functional.cosine_similarity(i, t).item())
    return out


def test_clip_score_matches_an_independent_computation(step_dir, card, clip_dir, small_sets):
    metric = create(str(card))
    result = score_step(step_dir, [metric], torch.device("cpu"), batch_size=3, quiet=True)[0]
    expected = _reference_cosines(clip_dir, step_dir, small_sets[1])
    stored = {}
    for line in (step_dir / "scores" / "clip-tiny").glob("*.jsonl"):
        for row in map(json.loads, line.read_text().splitlines()):
            stored[row["prompt_id"]] = row["records"][0]["cosine"]
    assert stored.keys() == expected.keys() and len(stored) == 4
    for key, value in expected.items():
        assert abs(stored[key] - value) <= 1e-5
    assert abs(result.values["value"] - sum(expected.values()) / 4) <= 1e-5
    assert result.values["n"] == 4 and (result.scored, result.reused) == (4, 0)
    summary = json.loads(result.summary_path.read_text())
    assert summary["fingerprint"] == result.fingerprint and summary["prompt_set"] == "coco-10k"


def test_batch_size_does_not_change_records_and_rescoring_reuses(step_dir, card):
    one = score_step(step_dir, [create(str(card))], torch.device("cpu"), batch_size=1, quiet=True)[0]
    store = next((step_dir / "scores" / "clip-tiny").glob("*.jsonl"))
    first = store.read_text()
    store.unlink()
    seven = score_step(step_dir, [create(str(card))], torch.device("cpu"), batch_size=7, quiet=True)[0]
    rows_one = [json.loads(x)["records"][0]["cosine"] for x in first.splitlines()]
    rows_seven = [json.loads(x)["records"][0]["cosine"] for x in store.read_text().splitlines()]
    assert np.allclose(rows_one, rows_seven, atol=1e-6, rtol=0)
    again = score_step(step_dir, [create(str(card))], torch.device("cpu"), quiet=True)[0]
    assert (again.scored, again.reused) == (0, 4)
    assert abs(again.values["value"] - seven.values["value"]) <= 1e-6
    assert abs(one.values["value"] - seven.values["value"]) <= 1e-6


def test_killed_scoring_resumes_and_changed_card_does_not_reuse(step_dir, card, clip_dir, tmp_path):
    score_step(step_dir, [create(str(card))], torch.device("cpu"), quiet=True)
    store = next((step_dir / "scores" / "clip-tiny").glob("*.jsonl"))
    lines = store.read_text().splitlines(keepends=True)
    store.write_text("".join(lines[:2]) + lines[2][:15])  # killed while appending the third image
    resumed = score_step(step_dir, [create(str(card))], torch.device("cpu"), quiet=True)[0]
    assert (resumed.scored, resumed.reused) == (2, 2)
    other = write_card(tmp_path / "c2.yaml", "clip-tiny", "clip_score", "coco-10k", {"clip": clip_dir},
                       params={"scale": "hessel"})
    changed = score_step(step_dir, [create(str(other))], torch.device("cpu"), quiet=True)[0]
    assert changed.fingerprint != resumed.fingerprint
    assert (changed.scored, changed.reused) == (4, 0)
    from evalkit.fileio.jsonl import read_rows

    cosines = list({r["file"]: r["records"][0]["cosine"] for r in read_rows(store)}.values())
    assert len(cosines) == 4
    assert abs(changed.values["value"] - sum(2.5 * max(c, 0.0) for c in cosines) / 4) <= 1e-6


def test_changed_image_is_refused(step_dir, card):
    victim = next((step_dir / "images" / "coco-10k").glob("*.png"))
    victim.write_bytes(victim.read_bytes()[:-4] + b"XXXX")
    with pytest.raises(EvalkitError, match="changed since it was generated"):
        score_step(step_dir, [create(str(card))], torch.device("cpu"), quiet=True)


def test_metric_needs_its_prompt_set(generate, sd_dir, small_sets, tmp_path, card):
    only_tifa = generate(sd_dir, small_sets[:1], out=tmp_path / "t")[0].step_dir
    with pytest.raises(EvalkitError, match="no images of prompt set 'coco-10k'"):
        score_step(only_tifa, [create(str(card))], torch.device("cpu"), quiet=True)


def test_unknown_metric_name_suggests(cli, tmp_path):
    code, _, err = cli("score", str(tmp_path), "--metrics", "clp")
    assert code == EXIT_USAGE
    assert "unknown metric 'clp'; did you mean 'clip'?" in err and len(err.strip().splitlines()) == 1


def test_offline_missing_metric_weights_is_one_line(cli, step_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    code, _, err = cli("score", str(step_dir), "--metrics", "clip", "--quiet")
    assert code == EXIT_USAGE
    assert "openai/clip-vit-large-patch14@main is not in the local Hugging Face cache" in err


PLUGIN = '''
import numpy as np

from evalkit.metrics.api import MetricInfo
from evalkit.metrics.params import Param
from evalkit.metrics.registry import Implementation, PluginCard


class Brightness:
    def __init__(self, card, context):
        self.card = card
        self.gamma = brightness.values(card)["gamma"]
        self.info = MetricInfo(name=card.name, display_name=card.display_name, version="1",
                               higher_is_better=card.higher_is_better, prompt_set=card.prompt_set)
    def fingerprint(self): return f"brightness-v1-gamma{self.gamma}"
    def setup(self, device): pass
    def prepare(self, item, image): return float(((np.asarray(image) / 255.0) ** self.gamma).mean())
    def score_batch(self, items, prepared): return [[{"value": v}] for v in prepared]
    def aggregate(self, records):
        return {"value": sum(r["value"] for r in records) / len(records), "n": len(records)}


brightness = Implementation(
    factory="brightness_metric:Brightness",
    params=(Param("gamma", float, 1.0, "exponent applied to pixel values in [0, 1]"),),
    card=PluginCard(prompt_set="tifa-v1.0", higher_is_better=True, display_name="Mean brightness"),
)
'''


@pytest.fixture
def brightness_plugin(tmp_path, monkeypatch):
    """An installed third-party package that registers `brightness` under the evalkit.metrics group."""
    plugin = tmp_path / "plugin"
    (plugin / "brightness_metric").mkdir(parents=True)
    (plugin / "brightness_metric" / "__init__.py").write_text(PLUGIN)
    dist = plugin / "brightness_metric-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brightness-metric\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[evalkit.metrics]\nbrightness = brightness_metric:brightness\n")
    monkeypatch.syspath_prepend(str(plugin))
    return plugin


def _brightness(step_dir, gamma):
    files = sorted((step_dir / "images/tifa-v1.0").glob("*.png"))
    return float(np.mean([((np.asarray(Image.open(p)) / 255.0) ** gamma).mean() for p in files]))


def test_third_party_metric_through_entry_points(brightness_plugin, step_dir):
    from evalkit.metrics.registry import available

    assert available()["brightness"] == "plugin brightness_metric:brightness"
    # a bare plugin name scores with the card the plugin declares
    result = score_step(step_dir, create_many("brightness"), torch.device("cpu"), quiet=True)[0]
    assert result.metric == "brightness" and result.n_images == 5
    assert math.isclose(result.values["value"], _brightness(step_dir, 1.0), rel_tol=1e-9)


def test_a_card_configures_a_plugin(brightness_plugin, step_dir, tmp_path):
    card = write_card(tmp_path / "bright2.yaml", "brightness-squared", "brightness", "tifa-v1.0", {},
                      params={"gamma": 2})
    result = score_step(step_dir, [create(str(card))], torch.device("cpu"), quiet=True)[0]
    assert result.metric == "brightness-squared" and result.n_images == 5
    assert math.isclose(result.values["value"], _brightness(step_dir, 2.0), rel_tol=1e-9)
    typo = write_card(tmp_path / "typo.yaml", "brightness-typo", "brightness", "tifa-v1.0", {}, params={"gama": 2})
    with pytest.raises(EvalkitError) as caught:
        create(str(typo))
    line = caught.value.one_line()
    assert f"metric card {typo} has unknown param 'gama'; did you mean 'gamma'?" in line
    assert "implementation 'brightness' accepts: gamma" in line


def test_unknown_card_param_names_the_card_the_param_and_what_is_accepted(cli, clip_dir, tmp_path, step_dir):
    card = write_card(tmp_path / "clip-typo.yaml", "clip-typo", "clip_score", "coco-10k", {"clip": clip_dir},
                      params={"sacle": "hessel"})
    code, _, err = cli("score", str(step_dir), "--metrics", str(card), "--quiet")
    assert code == EXIT_USAGE and len(err.strip().splitlines()) == 1
    assert f"metric card {card} has unknown param 'sacle'; did you mean 'scale'?" in err
    assert "implementation 'clip_score' accepts: scale" in err
    wrong = write_card(tmp_path / "fid-n.yaml", "fid-n", "fid", "coco-10k", {}, params={"n": "many"})
    with pytest.raises(EvalkitError, match=r"params\.n must be an integer, not 'many'"):
        create(str(wrong))
    unknown = write_card(tmp_path / "clp.yaml", "clp", "clip-score", "coco-10k", {"clip": clip_dir})
    with pytest.raises(EvalkitError, match=r"unknown implementation 'clip-score'; did you mean 'clip_score'\?"):
        create(str(unknown))


def test_every_shipped_card_loads_without_importing_model_code():
    """Each shipped card's params are declared by its implementation; reading the registry and checking
    the cards imports no implementation module (what keeps `evalkit metrics list` cheap)."""
    code = textwrap.dedent('''
        import sys
        from evalkit.metrics.registry import BUILTINS, available, shipped_cards
        cards = shipped_cards()
        for card in cards.values():
            BUILTINS[card.implementation].values(card)
        assert set(cards) <= set(available())
        heavy = sorted(m for m in sys.modules if m.startswith(("torch", "transformers", "open_clip", "torch_fidelity"))
                       or m in {r.factory.partition(":")[0] for r in BUILTINS.values()})
        print(len(cards), heavy)
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split(" ", 1) == ["17", "[]\n"]


def test_every_builtin_row_names_a_factory_and_known_inputs():
    from evalkit.metrics.context import input_names
    from evalkit.metrics.registry import BUILTINS
    from evalkit.runtime.imports import import_object

    for row in BUILTINS.values():
        assert callable(import_object(row.factory)) and set(row.reads) <= set(input_names())
        assert len({p.name for p in row.params}) == len(row.params)


@pytest.mark.parametrize("size", [(64, 48), (48, 64), (37, 91), (32, 32), (512, 512)])
def test_clip_transform_equals_the_pil_clip_processor(size):
    from transformers import CLIPImageProcessorPil

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    proc = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    expected = proc(images=image, return_tensors="pt")["pixel_values"][0]
    ours = clip_transform(image, 224)
    assert ours.shape == (3, 224, 224)
    assert float((ours - expected).abs().max()) <= 1e-5


def test_run_generates_what_the_metrics_need_and_scores_it(cli, sd_dir, card, tmp_path):
    out = tmp_path / "out"
    code, stdout, err = cli("run", str(sd_dir), "--metrics", str(card), "--out", str(out), "--limit", "3",
                            "--steps", "3", "--quiet")
    assert code == 0, err
    step_dir = out / "tiny-sd" / "final"
    assert sorted(p.name for p in (step_dir / "images").iterdir()) == ["coco-10k"]  # only what clip scores
    assert "clip-tiny = " in stdout and "(n=3; 3 scored, 0 reused)" in stdout
    # A --limit run is keyed on its own part of the set, and names the whole set `prompts list` shows.
    scored = json.loads((step_dir / "run.json").read_text())["prompt_sets"]["coco-10k"]
    whole = load_prompt_set("coco-10k")
    assert scored["fingerprint"] == whole.head(3).fingerprint != whole.fingerprint
    assert scored["part_of"] == {"fingerprint": whole.fingerprint, "n": 10000, "selection": "first 3"}
    code, listed, _ = cli("prompts", "list")
    assert code == 0 and whole.fingerprint[:12] in listed and "part_of" in listed
    code, stdout, _ = cli("score", str(out), "--metrics", str(card), "--quiet")
    assert code == 0 and "(n=3; 0 scored, 3 reused)" in stdout


def test_assets_fetch_resolves_and_hashes_what_a_metric_needs(cli, card, tmp_path, monkeypatch):
    code, stdout, err = cli("assets", "fetch", "--metrics", str(card))
    assert code == 0, err
    assert stdout.startswith("clip-tiny: ready (fingerprint ")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    code, _, err = cli("assets", "fetch", "--metrics", "clip-b32-hessel")
    assert code == EXIT_USAGE and "openai/clip-vit-base-patch32@main is not in the local Hugging Face cache" in err
